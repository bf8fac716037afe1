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


def release_shared_memory(timeout: float = 10.0) -> None:
    """Wait until grain's background thread has unlinked the shared memory of every batch already taken.

    grain hands each batch over in shared memory and unlinks it from a thread once the batch is freed; a
    process that ends right after a stop (SIGTERM, Ctrl-C) left some of those for Python's resource tracker,
    which warned of "leaked shared_memory objects" (and unlinked them). Call it before the process ends."""
    import gc
    import time

    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:
        return
    requests = getattr(SharedMemoryArray, "_outstanding_del_requests", None)
    if requests is None:
        return
    gc.collect()  # batches held only by reference cycles are freed (and queued for unlinking) now
    deadline, taken = time.monotonic() + timeout, 0
    try:  # each outstanding unlink holds one of the semaphore's 50 slots until it is done
        while taken < 50 and requests.acquire(timeout=max(0.0, deadline - time.monotonic())):
            taken += 1
    finally:
        for _ in range(taken):
            requests.release()
