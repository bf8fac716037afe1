"""Where a whole `ttlx train` run's epochs go: seconds of training steps, of the validation pass, and of the
work between an epoch's validation and the next epoch's first step (metrics, checkpoint saves, curves),
measured inside one `ttlx train` process (RESULTS section 9).

    python benchmarks/between_epochs.py [--json OUT] -- TRAIN_ARGS...

TRAIN_ARGS are `ttlx train`'s options (``--force`` is added). The last epoch's "after" time runs until
``train()`` returns, so it includes waiting for checkpoints still being written. Reported per epoch and as
medians of the epochs after the first (epoch 1 holds the compile).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def timed_run(train_args: list[str]) -> list[dict]:
    """Run `ttlx train` in this process; (train_s, val_s, after_s) of each epoch."""
    import ttlx.train as training
    from ttlx.cli import app

    marks: list[tuple[str, float]] = []
    train_epoch, predict = training.train_epoch, training.predict

    def timed_train_epoch(*args, **kwargs):
        marks.append(("train", time.perf_counter()))
        result = train_epoch(*args, **kwargs)
        marks.append(("val", time.perf_counter()))
        return result

    def timed_predict(*args, **kwargs):
        result = predict(*args, **kwargs)
        if marks and marks[-1][0] == "val":
            marks.append(("after", time.perf_counter()))
        return result

    training.train_epoch, training.predict = timed_train_epoch, timed_predict
    try:
        app(["train", *train_args, "--force", "--no-progress"], standalone_mode=False)
    finally:
        training.train_epoch, training.predict = train_epoch, predict
    marks.append(("end", time.perf_counter()))
    epochs = []
    for i, (kind, start) in enumerate(marks):
        if kind == "train":
            val, after, nxt = marks[i + 1][1], marks[i + 2][1], marks[i + 3][1]
            epochs.append({"train_s": val - start, "val_s": after - val, "after_s": nxt - after})
    return epochs


def summary(epochs: list[dict]) -> dict:
    later = epochs[1:] or epochs
    return {key: statistics.median(e[key] for e in later) for key in ("train_s", "val_s", "after_s")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    epochs = timed_run(train_args)
    out = {"train_args": train_args, "epochs": epochs, "median_after_first": summary(epochs)}
    for number, epoch in enumerate(epochs, 1):
        print(f"epoch {number:3d}  train {epoch['train_s']:8.2f} s  validation {epoch['val_s']:7.2f} s  "
              f"after {epoch['after_s']:6.2f} s")
    median = out["median_after_first"]
    print(f"median of epochs 2+: train {median['train_s']:.2f} s, validation {median['val_s']:.2f} s, "
          f"after {median['after_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
