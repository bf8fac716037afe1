"""How many read threads and worker processes a loader uses, where the user leaves it to ttlx."""

from __future__ import annotations

from ttlx import settings
from ttlx.errors import ConfigError


def loader_threads(num_threads: int | None = None) -> int:
    """grain read threads per loading process: ``num_threads``, else ``$TTLX_LOADER_THREADS``, else
    min(4, CPUs). A thread holds the GIL for about a fifth of each image (RESULTS section 6.3), so more
    threads in one process stop paying off near five, and in the training process on a GPU host they slow
    the loop that launches the steps (RESULTS section 7); ``--num-workers`` adds processes instead."""
    if num_threads is None:
        num_threads = settings.loader_threads() or min(4, settings.schedulable_cpus())
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ConfigError(f"The loader needs at least 1 thread, got {num_threads!r} (num_threads or "
                          "TTLX_LOADER_THREADS).")
    return num_threads


# Worker processes per accelerator when --num-workers is left to ttlx; 8 fed one H100 (RESULTS section 7).
WORKERS_PER_ACCELERATOR = 8
# A one-pass (evaluation) loader starts its worker processes for every pass, about half a second each
# (RESULTS section 7.5), so left to ttlx it gets at most one worker per this many batches.
ONE_PASS_BATCHES_PER_WORKER = 4


def loader_workers(num_workers: int | None = None, one_pass_batches: int | None = None) -> int:
    """grain worker processes: ``num_workers`` if given, else chosen for where the steps run.

    On CPU, 0: the cores run the train step, and the loader's threads cost a whole run 5-9% on two cores.
    On accelerators, half the host's cores, at most :data:`WORKERS_PER_ACCELERATOR` per local device: an
    H100 trains ResNet50 at 4,000-5,000 images/s, and threads in the training process cannot feed it because
    they share one GIL with the loop that launches the steps. Measured on one H100 with 16 cores: the
    default 4 threads waited for images half of every epoch (1,220-1,530 img/s), 8 threads starved the loop
    itself (1,300-1,350 img/s, no waiting), 8 processes 3,810-3,990 img/s with 0.5% waiting (RESULTS
    section 7). Batches do not depend on the count, so it is free to change, also on resume.
    ``one_pass_batches``: the batches of a loader read once (an evaluation pass, whose workers start anew each
    time), which caps the chosen count at one worker per :data:`ONE_PASS_BATCHES_PER_WORKER` batches."""
    if num_workers is not None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"The loader's worker count must be a whole number, 0 or more, got {num_workers!r} "
                              "(--num-workers or num_workers).")
        return num_workers
    import jax

    if jax.default_backend() == "cpu":
        return 0
    workers = max(1, min(settings.schedulable_cpus() // 2, WORKERS_PER_ACCELERATOR * jax.local_device_count()))
    if one_pass_batches is not None:
        workers = min(workers, one_pass_batches // ONE_PASS_BATCHES_PER_WORKER)
    return workers
