"""The PyTorch + torchvision side of the benchmarks: the reference recipe's model, step and input pipeline.

Runs in the interpreter given to ``run.py --reference-python`` (it needs torch and torchvision, never
ttlx) and prints one ``BENCH_RESULT`` JSON line. Example:
``python benchmarks/reference_side.py train_step --model resnet50-ftl --batch-size 16 --threads 2``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402  (stdlib only, shared with run.py and the ttlx side)


def device_and_sync():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.cuda.synchronize
    return torch.device("cpu"), lambda: None


def truncated_features(spec: dict):
    """The kept part of a randomly initialised torchvision network, cut as ttlx cuts it."""
    import torch.nn as nn
    import torchvision

    if spec["arch"] == "resnet50":
        net = torchvision.models.resnet50(weights=None)
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        if spec["layerwise"]:
            kept = [block for stage in stages for block in stage][: spec["trunc"]]
        else:
            kept = stages if spec["trunc"] == -1 else stages[: spec["trunc"]]
        return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *kept)
    net = torchvision.models.densenet201(weights=None)
    names = [name for name, _ in net.features.named_children()]
    if spec["trunc"] == -1:  # all features, norm5 and the ReLU torchvision applies before its classifier
        return nn.Sequential(net.features, nn.ReLU())
    last = names.index(f"transition{spec['trunc']}")
    return nn.Sequential(*[getattr(net.features, name) for name in names[: last + 1]])


def build_model(name: str, image_size: int):
    """Features + the reference code's default head (Flatten + Linear), and its parameter count."""
    import torch
    import torch.nn as nn

    features = truncated_features(protocol.MODELS[name])
    with torch.no_grad():
        flat = features.eval()(torch.zeros(1, 3, image_size, image_size)).numel()
    model = nn.Sequential(features, nn.Flatten(), nn.Linear(flat, protocol.NUM_CLASSES))
    return model, sum(p.numel() for p in model.parameters())


def autocast(device, dtype: str):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def make_train_step(args):
    """The reference recipe's step: Adam(lr 1e-4), class-weighted cross-entropy, on one fixed batch."""
    import torch

    device, sync = device_and_sync()
    model, params = build_model(args.model, args.image_size)
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.ones(protocol.NUM_CLASSES, device=device))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(device)
    labels = (torch.arange(args.batch_size) % protocol.NUM_CLASSES).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, args.dtype):
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        sync()

    return step, params, device


def measure_train_step(args) -> dict:
    step, params, device = make_train_step(args)
    timing = protocol.time_steps(step, warmup=args.warmup, steps=args.steps)
    return {"img_s": protocol.images_per_second(args.batch_size, timing), "params": params,
            "device": str(device), **timing}


def measure_memory(args) -> dict:
    import torch

    step, params, device = make_train_step(args)
    for _ in range(args.steps):
        step()
    device_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return {"peak_rss_mib": protocol.peak_rss_mib(), "device_peak_mib": device_peak, "params": params,
            "device": str(device)}


def measure_latency(args) -> dict:
    """Median wall time of a batch-1 eval-mode forward pass (the paper's T column)."""
    import torch

    device, sync = device_and_sync()
    model, params = build_model(args.model, args.image_size)
    model = model.to(device).eval()
    image = torch.randn(1, 3, args.image_size, args.image_size, device=device)
    times = []
    with torch.no_grad(), autocast(device, args.dtype):
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            model(image)
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    return {"latency_ms": 1000 * statistics.median(times), "params": params, "device": str(device)}


def measure_pipeline(args) -> dict:
    """A torchvision-style input pipeline: ImageFolder, RandomResizedCrop + flip, DataLoader workers."""
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(args.image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(protocol.IMAGENET_MEAN, protocol.IMAGENET_STD),
    ])
    dataset = datasets.ImageFolder(args.images, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.threads, persistent_workers=True)

    def batches():
        while True:
            yield from loader

    stream = batches()
    timing = protocol.time_steps(lambda: next(stream), warmup=args.warmup, steps=args.steps)
    return {"img_s": protocol.images_per_second(args.batch_size, timing, overall=True), "workers": args.threads,
            "images": len(dataset), **timing}


MEASUREMENTS = {"train_step": measure_train_step, "memory": measure_memory, "latency": measure_latency,
                "pipeline": measure_pipeline}


def main() -> None:
    args = protocol.side_arguments(__doc__.splitlines()[0]).parse_args()
    if args.measurement not in MEASUREMENTS:
        raise SystemExit(f"the reference side has no '{args.measurement}' measurement")
    malloc = protocol.tune_glibc_malloc() if args.tune_malloc else False
    args.threads = protocol.pin_threads(args.threads)
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    result = MEASUREMENTS[args.measurement](args)
    result.update(side="reference", threads=args.threads, malloc_tuned=malloc,
                  versions={"torch": torch.__version__, "torchvision": torchvision.__version__})
    protocol.emit(result)


if __name__ == "__main__":
    main()
