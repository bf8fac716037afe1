"""Where a whole `ttlx train` run's epochs go: seconds of training steps, of the validation pass, and of the
work between an epoch's validation and the next epoch's first step (metrics, checkpoint saves, curves),
measured inside one `ttlx train` process (RESULTS section 9).

    python benchmarks/probes/between_epochs.py [--json OUT] -- TRAIN_ARGS...

TRAIN_ARGS are `ttlx train`'s options (``--force`` is added). The last epoch's "after" time runs until
``train()`` returns, so it includes waiting for checkpoints still being written. Reported per epoch and as
medians of the epochs after the first (epoch 1 holds the compile). Each epoch's train steps are split further
into the host's parts of the loop, in milliseconds per step (``step_ms``): ``loader`` (the next batch),
``copy`` (its copy to the devices), ``poll`` (the check for written checkpoints), ``display`` (the progress
line) and ``rest``, the step's call and the wait for the previous step's loss: on a GPU, when ``rest`` is
close to the device's step time the device sets the pace, and the other parts are what the host adds
(RESULTS section 10). Only the loop's own thread counts: with ``TTLX_DEVICE_PREFETCH`` set, the loader and the
copy run in another thread (``loader`` and ``copy`` read 0) and the loop's wait for them is in ``rest``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

PARTS = ("loader", "copy", "poll", "display")  # host work inside an epoch's train steps, timed apart


def in_loop_thread() -> bool:
    """Whether this is the training loop's thread (with TTLX_DEVICE_PREFETCH the loader and the copy run in
    another one, where they cost the loop nothing but its wait for them: the run's ``input_wait``)."""
    return threading.current_thread() is threading.main_thread()


class TimedIterator:
    """The loader's iterator, with the seconds spent in ``next`` in the loop's thread added to
    ``spent["loader"]``."""

    def __init__(self, iterator, spent: dict):
        self.iterator, self.spent = iterator, spent

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            if in_loop_thread():
                self.spent["loader"] += time.perf_counter() - start


def timed_run(train_args: list[str]) -> list[dict]:
    """Run `ttlx train` in this process; per epoch (train_s, val_s, after_s) and, in ``step_ms``, the
    milliseconds per train step of each host part of the loop (:data:`PARTS`: the next batch from the loader,
    its copy to the devices, the check for written checkpoints, the progress display) and ``rest`` (the step's
    call and the wait for the previous step's loss)."""
    import ttlx.training.loop as training
    from ttlx.cli import app
    from ttlx.training.epoch_writer import EpochWriter
    from ttlx.training.progress import TrainProgress

    marks: list[tuple[str, float]] = []
    parts: list[dict] = []  # per epoch: seconds per part, and the step count
    patched = {(training, "train_epoch"): training.train_epoch, (training, "predict"): training.predict,
               (training, "shard_batch"): training.shard_batch, (EpochWriter, "poll"): EpochWriter.poll,
               (TrainProgress, "update"): TrainProgress.update}
    train_epoch, predict = patched[(training, "train_epoch")], patched[(training, "predict")]

    def timed_part(name, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if parts and "open" in parts[-1] and in_loop_thread():
                    parts[-1][name] += time.perf_counter() - start
        return timed

    def timed_train_epoch(session, iterator, *args, **kwargs):
        parts.append({**dict.fromkeys(PARTS, 0.0), "open": True,
                      "steps": session.train_loader.steps_per_epoch})
        marks.append(("train", time.perf_counter()))
        try:
            return train_epoch(session, TimedIterator(iterator, parts[-1]), *args, **kwargs)
        finally:
            marks.append(("val", time.perf_counter()))
            del parts[-1]["open"]

    def timed_predict(*args, **kwargs):
        result = predict(*args, **kwargs)
        if marks and marks[-1][0] == "val":
            marks.append(("after", time.perf_counter()))
        return result

    training.train_epoch, training.predict = timed_train_epoch, timed_predict
    training.shard_batch = timed_part("copy", patched[(training, "shard_batch")])
    EpochWriter.poll = timed_part("poll", patched[(EpochWriter, "poll")])
    TrainProgress.update = timed_part("display", patched[(TrainProgress, "update")])
    try:
        app(["train", *train_args, "--force", "--no-progress"], standalone_mode=False)
    finally:
        for (owner, name), original in patched.items():
            setattr(owner, name, original)
    marks.append(("end", time.perf_counter()))
    epochs = []
    for i, (kind, start) in enumerate(marks):
        if kind == "train":
            val, after, nxt = marks[i + 1][1], marks[i + 2][1], marks[i + 3][1]
            epochs.append({"train_s": val - start, "val_s": after - val, "after_s": nxt - after})
    for epoch, spent in zip(epochs, parts):
        per_step = {name: 1e3 * spent[name] / spent["steps"] for name in PARTS}
        per_step["rest"] = 1e3 * epoch["train_s"] / spent["steps"] - sum(per_step.values())
        epoch["steps"], epoch["step_ms"] = spent["steps"], per_step
    return epochs


def summary(epochs: list[dict]) -> dict:
    later = epochs[1:] or epochs
    medians = {key: statistics.median(e[key] for e in later) for key in ("train_s", "val_s", "after_s")}
    medians["step_ms"] = {part: statistics.median(e["step_ms"][part] for e in later) for part in later[0]["step_ms"]}
    return medians


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    epochs = timed_run(train_args)
    if not epochs:
        raise SystemExit("ttlx train finished no epoch (its message is above); nothing to report.")
    out = {"train_args": train_args, "epochs": epochs, "median_after_first": summary(epochs)}
    for number, epoch in enumerate(epochs, 1):
        host = "  ".join(f"{name} {ms:.2f}" for name, ms in epoch["step_ms"].items())
        print(f"epoch {number:3d}  train {epoch['train_s']:8.2f} s  validation {epoch['val_s']:7.2f} s  "
              f"after {epoch['after_s']:6.2f} s  ms per step: {host}")
    median = out["median_after_first"]
    host = ", ".join(f"{name} {ms:.2f}" for name, ms in median["step_ms"].items())
    print(f"median of epochs 2+: train {median['train_s']:.2f} s, validation {median['val_s']:.2f} s, "
          f"after {median['after_s']:.2f} s; ms per step: {host}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
