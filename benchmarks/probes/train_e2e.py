"""Whole `ttlx train` runs, timed as a user gets them: images/s of the training epochs after the first, with
the input pipeline, host-to-device copies and the training loop included (the train-step benchmark feeds one
batch already on the device). Answers whether a run on a GPU is bound by its loader (RESULTS section 6.3)
and whether TTL-2's faster step shows in its epochs.

    python benchmarks/probes/train_e2e.py --json OUT [--models resnet50-ftl resnet50-ttl2] [--workers auto 0 8]
        [--threads 8] [--worker-threads 1 2] [--images 4096] [--size 256] [--batch-size 128] [--image-size 224]
        [--dtype bfloat16] [--epochs 3] [--device-prefetch 0 2]

Prepares the ``synthetic`` dataset once (``--images`` generated images of ``--size`` px, split 64/16/20),
then runs ``python -m ttlx.cli train`` per model and loader setting (each ``--workers`` count with the
default threads, ``auto`` leaving ``--num-workers`` to ttlx; each ``--threads`` count through
``TTLX_LOADER_THREADS`` without workers; each nonzero worker count again with each ``--worker-threads`` count
of threads per worker; each of these with each ``--device-prefetch`` value of ``TTLX_DEVICE_PREFETCH``, the
batches placed on the devices ahead by a thread), each in a
fresh process and run dir (random weights, Adam, the benchmark's networks and flatten head), and reads
``images_per_s`` and ``input_wait`` (the share of the epoch spent waiting for the loader) of each epoch from
the run's ``metrics.jsonl``. Epoch 1 holds the compile and is reported apart.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: protocol, ttlx_side
import protocol  # noqa: E402


def ttlx_command(*args: str) -> list[str]:
    from ttlx.runtime.precompile import module_command

    return module_command("ttlx.cli", *args)


def train_arguments(model: str, data_dir: Path, workdir: Path, args, workers: int | str) -> list[str]:
    spec = protocol.MODELS[model]
    return ["train", "--dataset", "synthetic", "--data-dir", str(data_dir), "--model", spec["arch"],
            "--trunc", str(spec["trunc"]), "--layerwise" if spec["layerwise"] else "--no-layerwise",
            "--head", protocol.HEAD, "--pretrained", "random", "--bs", str(args.batch_size),
            "--image-size", str(args.image_size), "--dtype", args.dtype, "--max-epoch", str(args.epochs),
            "--lr", str(protocol.LEARNING_RATE), "--workdir", str(workdir),
            *([] if workers == "auto" else ["--num-workers", str(workers)])]


def epoch_column(workdir: Path, column: str) -> list[float]:
    """``column`` of each finished epoch in the run's metrics.jsonl, in order (None where a row lacks it)."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line).get(column) for line in lines if line.strip()]


def run_one(model: str, data_dir: Path, scratch: Path, args, workers: int | str, threads: int | None = None,
            prefetch: int | None = None) -> dict:
    label = "default" if threads is None else threads
    ahead = "default" if prefetch is None else prefetch
    workdir = scratch / f"run-{model}-w{workers}-t{label}-p{ahead}"
    env = {**os.environ, **({} if threads is None else {"TTLX_LOADER_THREADS": str(threads)}),
           **({} if prefetch is None else {"TTLX_DEVICE_PREFETCH": str(prefetch)})}
    start = time.perf_counter()
    done = subprocess.run(ttlx_command(*train_arguments(model, data_dir, workdir, args, workers)),
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    setting = {"model": model, "workers": workers, "threads": label, "prefetch": ahead}
    if done.returncode != 0:
        return {**setting, "error": done.stderr.strip()[-2000:]}
    rates, waits = epoch_column(workdir, "images_per_s"), epoch_column(workdir, "input_wait")
    later = rates[1:]
    return {**setting, "epoch_img_s": rates, "epoch_input_wait": waits,
            "img_s": statistics.median(later) if later else None, "first_epoch_img_s": rates[0] if rates else None,
            "wall_s": wall}


def worker_count(text: str) -> int | str:
    """``auto`` or a whole number of worker processes (argparse type)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number, got {text!r}") from None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["resnet50-ftl", "resnet50-ttl2"],
                        choices=sorted(protocol.MODELS))
    parser.add_argument("--workers", type=worker_count, nargs="+", default=["auto"],
                        help="worker-process counts, or auto (ttlx's choice for the backend)")
    parser.add_argument("--threads", type=int, nargs="+", default=[],
                        help="also run without workers at these loader thread counts (TTLX_LOADER_THREADS)")
    parser.add_argument("--worker-threads", type=int, nargs="+", default=[],
                        help="also run each nonzero worker count with these threads per worker")
    parser.add_argument("--device-prefetch", type=int, nargs="+", default=[None],
                        help="run every setting with each of these TTLX_DEVICE_PREFETCH values (batches placed on "
                             "the devices ahead by a thread; default: the environment's)")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=256, help="side of the generated images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    out = {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "runs": []}
    with tempfile.TemporaryDirectory(prefix="ttlx-e2e-") as scratch:
        data_dir = Path(scratch) / "data"
        start = time.perf_counter()
        subprocess.run(ttlx_command("prepare", "synthetic", "--data-dir", str(data_dir), "--count",
                                    str(args.images), "--size", str(args.size)), check=True, capture_output=True)
        out["prepare_s"] = time.perf_counter() - start
        for model in args.models:
            settings = [(workers, None) for workers in args.workers] + [(0, threads) for threads in args.threads]
            settings += [(workers, threads) for workers in args.workers if workers != 0
                         for threads in args.worker_threads]
            for (workers, threads), prefetch in itertools.product(settings, args.device_prefetch):
                out["runs"].append(run_one(model, data_dir, Path(scratch), args, workers, threads, prefetch))
                args.json.write_text(json.dumps(out, indent=2) + "\n")  # each run kept as soon as it ends
                print(json.dumps(out["runs"][-1]), flush=True)
    print(table(out["runs"]))
    return out


def table(runs: list[dict]) -> str:
    lines = ["model            workers  threads  prefetch  img/s (epochs 2+)  epoch 1 (compile)  input wait (last)",
             "-" * 102]
    for run in runs:
        setting = f"{run['model']:16} {run['workers']!s:>7}  {run['threads']!s:>7}  {run['prefetch']!s:>8}"
        if "error" in run:
            lines.append(f"{setting}  error: {run['error'].splitlines()[-1]}")
            continue
        rate = "-" if run["img_s"] is None else f"{run['img_s']:.1f}"
        wait = run["epoch_input_wait"][-1]
        lines.append(f"{setting}  {rate:>17}  {run['first_epoch_img_s']:>17.1f}  "
                     f"{'-' if wait is None else format(wait, '.0%'):>17}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
