"""Stopping a run in the middle of an epoch on request, and taking it up again at the same step.

A stop is requested by SIGTERM (what SLURM and Kubernetes send at a time limit or a preemption) or by Ctrl-C.
Training finishes the step it is in, writes a ``latest`` checkpoint of the unfinished epoch (its step number
is that epoch's; its ``partial`` entry holds the steps done and their losses), and the command ends with one
sentence. The same command resumes at the next step, and the run ends as an uninterrupted one would (CPU).
A second Ctrl-C stops at once (the previous epoch's checkpoint stays).

With several processes (``--multihost``) every process must stop after the same step: JAX's preemption
service (on by default) catches SIGTERM in any process and agrees on the step through the coordination
service (``jax.experimental.multihost_utils.reached_preemption_sync_point``); Ctrl-C in one process is turned
into such a notice. One process alone catches the signals itself.
"""

from __future__ import annotations

import contextlib
import os
import signal

import jax
import numpy as np

from ttlx.runs import checkpoint as ckpt


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on request after a step, its checkpoint written; the same command resumes. Not an
    ``Exception``: a sweep stops too instead of going on with its next run."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised by the training loop after the step at which every process agreed to stop."""

    def __init__(self, epoch: int, step: int, losses: list, seconds: float, waited: float, position: tuple):
        """``position``: (loader iterator, its state at the first step of this process's part of the epoch when
        a thread reads batches ahead, else None; that first step)."""
        super().__init__(f"stop after step {step} of epoch {epoch}")
        self.epoch, self.step, self.losses, self.seconds, self.waited = epoch, step, losses, seconds, waited
        iterator, mark, first = position
        # the loader's state, and the batches to read past after it
        self.data_state, self.skip = data_position(iterator, mark, step - first + 1)


class StopSignals:
    """Which signal asked training to stop (None while none did); :meth:`due` says when to stop."""

    def __init__(self):
        self.signal: int | None = None
        self.multi = jax.process_count() > 1
        self._previous: dict[int, object] = {}
        self.partial: dict | None = None  # the unfinished epoch a resumed run starts in
        self.partial_on_disk: int | None = None  # that epoch, while its checkpoint is the newest latest step

    @contextlib.contextmanager
    def installed(self):
        """Catch SIGTERM and Ctrl-C while training runs (from the main thread only; elsewhere a no-op)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signals = (signal.SIGINT,) if self.multi else (signal.SIGTERM, signal.SIGINT)  # JAX owns SIGTERM there
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous = {}

    def _on_signal(self, sig: int, frame) -> None:
        if sig == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = sig
        if self.multi:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption notice, which every process then sees

    def due(self, global_step: int) -> bool:
        """Whether to stop after ``global_step`` (the same answer in every process)."""
        if not self.multi:
            return self.signal is not None
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(global_step):
            self.signal = self.signal or signal.SIGTERM
            return True
        return False


def save_partial(session, epochs, stop: StopRequested, run_path) -> TrainingStopped:
    """Write the ``latest`` checkpoint of the unfinished epoch ``stop.epoch`` (after the epoch before it); returns
    the error to end the command with."""
    from ttlx.training.resume import KEEP_LATEST, latest_step

    epochs.settle()
    checkpoints = epochs.checkpoints
    if stop.epoch in checkpoints.steps(ckpt.LATEST):  # an earlier stop in this epoch
        checkpoints.delete(ckpt.LATEST, stop.epoch)
    session.kept[stop.epoch] = session.best_epoch
    session.kept = dict(sorted(session.kept.items())[-KEEP_LATEST:])
    arrays, meta = latest_step(session, None, data_state=stop.data_state)
    meta["partial"] = {"epoch": stop.epoch, "step": stop.step, "losses": [float(x) for x in stop.losses],
                       "seconds": stop.seconds, "waited": stop.waited, "skip": stop.skip}
    checkpoints.save(ckpt.LATEST, stop.epoch, arrays, meta)
    checkpoints.finish()
    checkpoints.keep_only(ckpt.LATEST, set(session.kept))
    checkpoints.keep_only(ckpt.BEST, set(session.kept.values()))
    return stopped(session, stop, run_path, session.stop)


def drop_partial(session, epochs, epoch: int) -> None:
    """Delete the unfinished epoch's checkpoint before the epoch's full one is written in its place (a kill
    between the two resumes from the epoch before, and trains this one again)."""
    if session.stop.partial_on_disk == epoch:
        epochs.checkpoints.delete(ckpt.LATEST, epoch)
    session.stop.partial_on_disk = None


def stopped(session, stop: StopRequested, run_path, signals: StopSignals) -> TrainingStopped:
    """The one sentence (and exit code) of a run stopped on request."""
    name = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}.get(signals.signal, "a stop request")
    code = 130 if signals.signal == signal.SIGINT else 143
    hosts = " on every host" if jax.process_count() > 1 else ""
    if signals.multi and signals.signal != signal.SIGINT:  # JAX's notice: this process's SIGTERM or another's
        name = "SIGTERM or Ctrl-C to a process of this run"
    return TrainingStopped(
        f"Stopped by {name} after step {stop.step} of {session.train_loader.steps_per_epoch} in epoch "
        f"{stop.epoch}, its checkpoint saved in {run_path}; re-run the same command{hosts} to resume there.",
        code)


def resume_partial(session, meta: dict, iterator) -> None:
    """Take up an unfinished epoch's checkpoint: the loop starts at its next step with its losses."""
    partial = meta.get("partial")
    session.stop.partial = partial
    if partial and partial.get("skip"):  # the state is the epoch's start: read past the batches it trained
        for _ in range(partial["skip"]):
            next(iterator)


def first_step(session, epoch: int) -> tuple[int, list, float, float]:
    """(first step, losses so far, seconds and loader wait so far) of ``epoch``: 1, [] unless it resumes an
    unfinished one. The unfinished epoch's checkpoint is deleted when it ends (its full one replaces it)."""
    partial, session.stop.partial = session.stop.partial, None
    if not partial or partial["epoch"] != epoch:
        return 1, [], 0.0, 0.0
    session.stop.partial_on_disk = epoch
    return partial["step"] + 1, [np.float32(x) for x in partial["losses"]], partial["seconds"], partial["waited"]


def data_position(iterator, mark, done: int) -> tuple:
    """(loader state, batches to read past after it) to resume after ``done`` steps of this epoch's part:
    the loader's state now, or, when a thread reads batches ahead (``mark``: the state at the part's start),
    ``mark`` and the steps done."""
    return (iterator.get_state(), 0) if mark is None else (mark, done)
