"""Train the tiny test run in a fresh process: ``python run_tiny.py WORKDIR [--kill-after-epoch N]
[--bs N]``. Used by the tests that need a real kill -9 or several virtual CPU devices."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_data import FakeData  # noqa: E402
from tiny_model import TINYNET, tiny_train_config  # noqa: E402

from ttlx import registry  # noqa: E402
from ttlx.errors import UserError  # noqa: E402
from ttlx.run_dir import RunDir  # noqa: E402
from ttlx.train import train  # noqa: E402


def kill_after(epoch: int) -> None:
    """SIGKILL this process right after epoch ``epoch`` is checkpointed, before its metrics line is written."""
    append = RunDir.append_metrics

    def append_then_die(self, row):
        if row["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, row)

    RunDir.append_metrics = append_then_die


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--kill-after-epoch", type=int)
    parser.add_argument("--bs", type=int, default=8)
    args = parser.parse_args()
    registry.models.register("tinynet", TINYNET, package="tests")
    if args.kill_after_epoch:
        kill_after(args.kill_after_epoch)
    try:
        train(tiny_train_config(args.workdir, batch_size=args.bs), progress=False, data=FakeData())
    except UserError as err:
        print(f"UserError: {err}")
        sys.exit(2)
