"""The 3D networks' train step against the PyTorch reference, and the memory of a batch of windows.

    python benchmarks/train_step_3d.py run --reference-python /path/to/torch/bin/python \
        --penet-checkout PENET_CODE --json OUT.json [--models penet r3d_18] [--batch-size 2] \
        [--window 24] [--image-size 96] [--threads 2] [--rounds 2] [--steps 3] [--dtype float32]
    python benchmarks/train_step_3d.py memory --model penet --batch-size 8 --window 24 --image-size 192

``run``: both sides in fresh processes, alternating (ttlx, reference, ttlx, ...): images/s of one train
step on one fixed batch of CT windows (1 channel, already on the device), Adam lr 1e-4 and class-weighted
cross-entropy over a pooled 2-class head (ttlx's default recipe), every step waited for, the median step; the
ratio is ttlx over the reference. The reference is torchvision's ``r3d_18`` and the published PENet code's
``PENetClassifier`` (imported from the checkout ``--penet-checkout`` names; the code is not vendored); both
repeat the window's channel to 3 as the PENet code does, where ttlx folds it into the stem. Stochastic depth
is off on both sides: its random skips would make steps of one side differ from the other's. Each side also
reports its peak resident memory.
``memory``: the bytes XLA plans for ttlx's compiled train step (arguments, outputs, temporaries), without
running it: what a batch too big to run here would need.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402  (stdlib only)

MODELS = ("penet", "r3d_18")


def fixed_batch(batch: int, window: int, size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, window, size, size, 1)).astype(np.float32),
            (np.arange(batch) % protocol.NUM_CLASSES).astype(np.int32))


def ttlx_step(args):
    """(step function, parameter count, steps, state, batch) of what ``ttlx train`` compiles."""
    import numpy as np

    from ttlx.models import create_model, get_architecture
    from ttlx.training.freeze import param_labels
    from ttlx.training.optim import make_optimizer
    from ttlx.training.sharding import data_mesh, shard_batch
    from ttlx.training.steps import init_state, make_steps, model_arrays

    model = create_model(args.model, -1, num_classes=protocol.NUM_CLASSES, head="pool", pretrained="random",
                         image_size=args.image_size, dtype=args.dtype, window=args.window)
    for _, module in __import__("flax").nnx.iter_modules(model):
        if hasattr(module, "drop_key"):
            module.drop_key = None  # stochastic depth off, as on the reference side
    arch = get_architecture(args.model)
    params = model_arrays(model)[0]
    tx = make_optimizer(param_labels(params, set(), arch.classifier_key), lr=protocol.LEARNING_RATE)
    mesh = data_mesh()
    steps = make_steps(model, set(), tx, np.ones(protocol.NUM_CLASSES, np.float32), False, mesh)
    state = {"train": init_state(model, tx, 0, mesh)}
    images, labels = fixed_batch(args.batch_size, args.window, args.image_size)
    batch = shard_batch({"image": images, "label": labels, "mask": np.ones(len(labels), np.float32)}, mesh)

    def step():
        state["train"], loss = steps.train(state["train"], batch)
        loss.block_until_ready()

    count = sum(int(np.prod(p.shape)) for p in __import__("jax").tree.leaves(params))
    return step, count, steps, state, batch


def side_ttlx(args) -> dict:
    from ttlx.runtime.process import configure_process

    configure_process()
    import jax

    step, count, *_ = ttlx_step(args)
    timing = protocol.time_steps(step, warmup=args.warmup, steps=args.steps)
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None  # accelerators: the peak in use
    peak = {"peak_device_mib": stats["peak_bytes_in_use"] / 2**20} if stats else {}
    return {"img_s": protocol.images_per_second(args.batch_size, timing), "params": count,
            "device": str(device.device_kind), "peak_rss_mib": protocol.peak_rss_mib(), **peak, **timing}


def reference_model(args):
    import torch

    if args.model == "r3d_18":
        import torchvision

        return torchvision.models.video.r3d_18(weights=None, num_classes=protocol.NUM_CLASSES)
    import types

    sys.path.insert(0, args.penet_checkout)
    try:
        import util  # noqa: F401
    except ImportError:
        sys.modules["util"] = types.ModuleType("util")  # helpers the classifier's forward never calls
    from models.penet_classifier import PENetClassifier

    model = PENetClassifier(model_depth=50, num_classes=protocol.NUM_CLASSES, init_method="kaiming")
    for module in model.modules():
        if hasattr(module, "survival_prob"):
            module.survival_prob = 1.0  # stochastic depth off
    return model.to(torch.float32)


def side_reference(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    model = reference_model(args).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.ones(protocol.NUM_CLASSES))
    images, labels = fixed_batch(args.batch_size, args.window, args.image_size)
    x = torch.from_numpy(images).permute(0, 4, 1, 2, 3).contiguous().to(device)  # NCDHW, 1 channel
    y = torch.from_numpy(labels).long().to(device)
    loss_fn = loss_fn.to(device)
    autocast = args.dtype == "bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x.expand(-1, 3, -1, -1, -1))  # the channel repeated, as PENet's forward does
        loss_fn(logits.float(), y).backward()
        optimizer.step()
        if gpu:
            torch.cuda.synchronize()

    timing = protocol.time_steps(step, warmup=args.warmup, steps=args.steps)
    count = sum(p.numel() for p in model.parameters())
    peak = {"peak_device_mib": torch.cuda.max_memory_allocated() / 2**20} if gpu else {}
    return {"img_s": protocol.images_per_second(args.batch_size, timing), "params": count,
            "device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__,
            "peak_rss_mib": protocol.peak_rss_mib(), **peak, **timing}


def memory(args) -> dict:
    """XLA's plan for the compiled train step (nothing runs): bytes of arguments, outputs and temporaries."""
    from ttlx.runtime.process import configure_process

    configure_process()
    _, count, steps, state, batch = ttlx_step(args)
    compiled = steps.train.lower(state["train"], batch).compile()
    stats = compiled.memory_analysis()
    parts = {name: int(getattr(stats, f"{name}_size_in_bytes")) for name in ("argument", "output", "temp")}
    return {"model": args.model, "batch_size": args.batch_size, "window": args.window,
            "image_size": args.image_size, "dtype": args.dtype, "params": count, **parts,
            "planned_gib": (parts["argument"] + parts["temp"]) / 2**30}


def side(args) -> None:
    protocol.pin_threads(args.threads)
    result = side_ttlx(args) if args.side == "ttlx" else side_reference(args)
    protocol.emit(result)


def run_side(args, which: str, model: str) -> dict:
    python = sys.executable if which == "ttlx" else args.reference_python
    command = [python, __file__, "side", which, "--model", model, *shared_options(args)]
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        return protocol.parse_result(done.stdout)
    except ValueError:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}


def shared_options(args) -> list[str]:
    return ["--batch-size", str(args.batch_size), "--window", str(args.window), "--image-size",
            str(args.image_size), "--threads", str(args.threads), "--steps", str(args.steps), "--warmup",
            str(args.warmup), "--dtype", args.dtype, "--penet-checkout", args.penet_checkout or ""]


def run(args) -> None:
    rows, raw = [], []
    load_before = os.getloadavg()
    for model in args.models:
        sides = {"ttlx": [], "reference": []}
        for _ in range(args.rounds):
            for which in ("ttlx", "reference"):
                result = run_side(args, which, model)
                sides[which].append(result)
                raw.append({"model": model, "side": which, **result})
                print(f"{model:7s} {which:9s} {result.get('img_s', result.get('error'))}", flush=True)
        best = {k: max((r["img_s"] for r in v if "img_s" in r), default=None) for k, v in sides.items()}
        params = {k: next((r["params"] for r in v if "params" in r), None) for k, v in sides.items()}
        ratio = best["ttlx"] / best["reference"] if None not in best.values() else None
        rows.append({"model": model, "ttlx_img_s": best["ttlx"], "reference_img_s": best["reference"],
                     "ratio": ratio, "params": params, "same_params": params["ttlx"] == params["reference"],
                     "ttlx_peak_rss_mib": max((r.get("peak_rss_mib", 0) for r in sides["ttlx"]), default=None),
                     "reference_peak_rss_mib": max((r.get("peak_rss_mib", 0) for r in sides["reference"]),
                                                   default=None),
                     **{f"{k}_peak_device_mib": max(r["peak_device_mib"] for r in v if "peak_device_mib" in r)
                        for k, v in sides.items() if any("peak_device_mib" in r for r in v)}})
    report = {"train_steps_3d": rows, "settings": {k: v for k, v in vars(args).items() if k != "func"},
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_before": load_before, "load_after": os.getloadavg()},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
              "raw": raw}
    print(json.dumps(rows, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "side", "memory"):
        p = sub.add_parser(name)
        if name == "side":
            p.add_argument("side", choices=("ttlx", "reference"))
        if name == "run":
            p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
            p.add_argument("--reference-python", default=sys.executable)
            p.add_argument("--rounds", type=int, default=2)
            p.add_argument("--json", default=None)
        else:
            p.add_argument("--model", default="penet", choices=MODELS)
        p.add_argument("--batch-size", type=int, default=2)
        p.add_argument("--window", type=int, default=24)
        p.add_argument("--image-size", type=int, default=96)
        p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
        p.add_argument("--steps", type=int, default=3)
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
        p.add_argument("--penet-checkout", default=None, help="a checkout of github.com/marshuang80/penet")
    return parser


if __name__ == "__main__":
    parsed = arguments().parse_args()
    if parsed.command == "run":
        run(parsed)
    elif parsed.command == "side":
        side(parsed)
    else:
        print(json.dumps(memory(parsed)))
