"""``ttlx`` with the tiny test architecture registered: ``python tiny_cli.py train --model tinynet ...``.

The multi-process tests start real ``ttlx`` processes; the test plugin that registers ``tinynet`` exists only
in the test process, so each child registers it here and then runs the ordinary command line.

``TINY_CLI_KILL_AT=WHERE`` SIGKILLs this process at one point of training: ``step:E:S`` (after train step S
of epoch E ran), ``save:E`` (half-way through writing epoch E's latest checkpoint: arrays written, the step
not committed) or ``eval:E`` (in epoch E's validation pass). The loop then waits for each epoch's checkpoints
after the next epoch's first step, as in any epoch that lasts longer than a save (``tests/run_tiny.py``).

``TINY_CLI_STEP_SLEEP=S`` makes every train step after epoch 1 take S seconds longer (where signals land).
``TINY_CLI_SHARED_BARRIERS=1`` gives the ``best`` and ``latest`` checkpoint managers the same barrier names,
as before ttlx named them apart (``ttlx.runs.checkpoint.manager_options``): the stress runs' baseline.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: tiny_model

from run_tiny import die, die_in_latest_save  # noqa: E402
from tiny_model import TINYNET  # noqa: E402

from ttlx import registry  # noqa: E402
from ttlx.cli import main  # noqa: E402


def kill_at(where: str) -> None:
    import ttlx.training.loop as training
    from ttlx.training.epoch_writer import EpochWriter

    kind, *numbers = where.split(":")
    epoch = int(numbers[0])
    EpochWriter.poll = EpochWriter.settle
    now = {"epoch": 0, "step": 0}  # where this process's training stands (a resumed run starts later)
    train_epoch = training.train_epoch

    def recording(session, iterator, number, *args, **kwargs):
        now.update(epoch=number, step=0)
        return train_epoch(session, iterator, number, *args, **kwargs)

    training.train_epoch = recording
    if kind == "step":
        build, step = training.build_session, int(numbers[1])

        def build_then_die_in_step(*args, **kwargs):
            session = build(*args, **kwargs)
            train_step = session.steps.train

            def counted(state, batch):
                now["step"] += 1
                state, loss = train_step(state, batch)
                if (now["epoch"], now["step"]) == (epoch, step):
                    loss.block_until_ready()
                    die()
                return state, loss

            session.steps.train = counted
            return session

        training.build_session = build_then_die_in_step
    elif kind == "save":
        die_in_latest_save(epoch)
    elif kind == "eval":
        predict = training.predict

        def predict_then_die(*args, **kwargs):
            if now["epoch"] == epoch:
                die()
            return predict(*args, **kwargs)

        training.predict = predict_then_die
    else:
        raise SystemExit(f"unknown kill point {where}")


def slow_steps(seconds: float) -> None:
    """Each train step after epoch 1 takes ``seconds`` longer (the numbers are unchanged): a signal sent
    after epoch 1's line lands in a train step, however fast this machine is."""
    import time

    import ttlx.training.loop as training

    build = training.build_session

    def build_slowly(*args, **kwargs):
        session = build(*args, **kwargs)
        train_step, calls = session.steps.train, {"n": 0}

        def slow(state, batch):
            calls["n"] += 1
            if calls["n"] > session.train_loader.steps_per_epoch:
                time.sleep(seconds)
            return train_step(state, batch)

        session.steps.train = slow
        return session

    training.build_session = build_slowly


if __name__ == "__main__":
    registry.models.register("tinynet", TINYNET, package="tests")
    if os.environ.get("TINY_CLI_STEP_SLEEP"):
        slow_steps(float(os.environ["TINY_CLI_STEP_SLEEP"]))
    if os.environ.get("TINY_CLI_SHARED_BARRIERS"):
        import ttlx.runs.checkpoint as ckpt

        options = ckpt.manager_options
        ckpt.manager_options = lambda ocp, name: options(ocp, "shared")
    if os.environ.get("TINY_CLI_KILL_AT"):
        kill_at(os.environ["TINY_CLI_KILL_AT"])
    main()
