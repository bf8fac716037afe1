"""The loader's worker processes leave SIGINT and SIGTERM to the training process.

A terminal's Ctrl-C and a scheduler's SIGTERM (``kill`` of a process group, SLURM at a time limit) reach
every process of the group. A worker that took the signal itself died with a traceback each (24 for 12
workers), and its shared-memory buffers were left for Python's resource tracker to report as leaked. So
workers ignore both; the training process stops after its current step (``ttlx.training.stopping``) and
closes the loaders, which stops the workers (grain's stop event, then SIGKILL after a timeout).
"""

from __future__ import annotations

import signal


def ignore_stop_signals(worker_index: int, worker_count: int) -> None:
    """grain's ``worker_init_fn``: run in each worker process as it starts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
