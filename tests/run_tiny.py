"""Train the tiny test run in a fresh process: ``python run_tiny.py WORKDIR [--kill-after-epoch N]
[--kill-at WHERE] [--bs N]``. Used by the tests that need a real kill -9 or several virtual CPU devices.

``--kill-at`` SIGKILLs the process at one point of training: ``step:E:S`` (in train step S of epoch E),
``save:E`` (half-way through writing epoch E's latest checkpoint: arrays written, the step not yet
committed), ``eval:E`` (during epoch E's validation pass) or ``writing:E:S`` (in train step S of epoch E
while epoch E-1's latest checkpoint is still being written in the background).

An epoch's checkpoints are written while the next one trains (``ttlx.training.epoch_writer``). For ``step`` and
``eval`` the loop waits for them after the next epoch's first step, as it does in any epoch that lasts
longer than a save, so where the kill lands does not depend on how fast this machine writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_data import FakeData  # noqa: E402
from tiny_model import TINYNET, tiny_train_config  # noqa: E402

from ttlx import registry  # noqa: E402
from ttlx.errors import UserError  # noqa: E402
from ttlx.runs.run_dir import RunDir  # noqa: E402
from ttlx.training.loop import train  # noqa: E402


def kill_after(epoch: int) -> None:
    """SIGKILL this process right after epoch ``epoch`` is checkpointed, before its metrics line is written."""
    append = RunDir.append_metrics

    def append_then_die(self, row):
        if row["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, row)

    RunDir.append_metrics = append_then_die


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_in_latest_save(epoch: int) -> None:
    """SIGKILL half-way through writing epoch ``epoch``'s latest checkpoint: arrays written, step not committed."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    save_fn = handler.JsonCheckpointHandler._save_fn

    async def save_then_die(self, x, directory):
        if f"latest/{epoch}." in str(directory) and x.get("epoch") == epoch:
            die()
        return await save_fn(self, x, directory)

    handler.JsonCheckpointHandler._save_fn = save_then_die


def kill_at(where: str) -> None:
    """Install the SIGKILL hook that ``--kill-at`` names."""
    import ttlx.training.loop as training

    kind, *numbers = where.split(":")
    epoch = int(numbers[0])
    if kind in ("step", "eval"):
        from ttlx.training.epoch_writer import EpochWriter

        EpochWriter.poll = EpochWriter.settle
    if kind == "writing":  # epoch E-1's latest step never finishes writing; the kill comes in epoch E
        from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

        save_fn = handler.JsonCheckpointHandler._save_fn

        async def save_forever(self, x, directory):
            if f"latest/{epoch - 1}." in str(directory):
                await asyncio.sleep(3600)
            return await save_fn(self, x, directory)

        handler.JsonCheckpointHandler._save_fn = save_forever
        kind = "step"
    if kind == "step":
        step, calls = int(numbers[1]), {"n": 0}
        make_steps = training.make_steps

        def make_steps_then_die_in_step(*args, **kwargs):
            steps = make_steps(*args, **kwargs)
            train_step = steps.train

            def counted(state, batch):
                calls["n"] += 1
                if calls["n"] == (epoch - 1) * 6 + step:  # 6 steps per epoch (tiny_train_config)
                    state, loss = train_step(state, batch)
                    loss.block_until_ready()  # the step ran; the kill comes before its result is used
                    die()
                return train_step(state, batch)

            steps.train = counted
            return steps

        training.make_steps = make_steps_then_die_in_step
    elif kind == "save":
        die_in_latest_save(epoch)
    elif kind == "eval":
        predict, calls = training.predict, {"n": 0}

        def predict_then_die(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == epoch:
                die()
            return predict(*args, **kwargs)

        training.predict = predict_then_die
    else:
        raise SystemExit(f"unknown kill point {where}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--kill-after-epoch", type=int)
    parser.add_argument("--kill-at")
    parser.add_argument("--bs", type=int, default=8)
    args = parser.parse_args()
    registry.models.register("tinynet", TINYNET, package="tests")
    if args.kill_after_epoch:
        kill_after(args.kill_after_epoch)
    if args.kill_at:
        kill_at(args.kill_at)
    try:
        train(tiny_train_config(args.workdir, batch_size=args.bs), progress=False, data=FakeData())
    except UserError as err:
        print(f"UserError: {err}")
        sys.exit(2)
