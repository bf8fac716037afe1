"""Seconds per pass of an evaluation loader, with worker processes started for every pass and with persistent
ones (``make_loader(..., persistent_workers=True)``, as ``ttlx train``'s validation split; RESULTS 8.4).

    python benchmarks/eval_passes.py [--dataset digits] [--data-dir data] [--split val] [--batch-size 64]
        [--image-size 32] [--workers 2 8] [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import time


def pass_seconds(loader, passes: int) -> list[float]:
    """Wall seconds of each of ``passes`` full passes over ``loader``."""
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        for _ in loader:
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    from ttlx.data.pipeline import make_loader

    for persistent in (False, True):
        for workers in args.workers:
            loader = make_loader(args.dataset, args.data_dir, exp=1, split=args.split, batch_size=args.batch_size,
                                 image_size=args.image_size, train=False, num_workers=workers, normalize=False,
                                 persistent_workers=persistent)
            seconds = pass_seconds(loader, args.passes)
            loader.close()
            print(json.dumps({"persistent_workers": persistent, "workers": workers,
                              "batches": loader.steps_per_epoch, "pass_s": [round(s, 3) for s in seconds]}),
                  flush=True)


if __name__ == "__main__":
    main()
