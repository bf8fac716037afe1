"""An epoch's batches, read from the loader and placed on the devices ahead of the train steps that use them
by a background thread (``TTLX_DEVICE_PREFETCH=N``: up to N batches ahead; 0, the default, reads and places
each batch in the training loop's own thread, as before).

Why: on a GPU the host launches each train step's kernels from the training loop's thread (10-16 ms per
ResNet50 step on an H100, RESULTS section 10), and the same thread also reads the next batch and copies it to
the device (19 MB at batch 128 and 224 px). Whole runs went at 61-82% of the step rate measured with the
next step in flight. The copy releases Python's interpreter lock (on CPU a Python loop kept 73% of its speed
while another thread copied such batches), so another thread can do it while the loop launches a step.
Off by default until measured on a GPU (``benchmarks/probes/between_epochs.py``'s ``step_ms``, with and without):
the batches, their order and the data iterator's state at each epoch's end are the same either way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

from ttlx import settings


def batches_ahead() -> int:
    """``$TTLX_DEVICE_PREFETCH`` as a number of batches (0 when unset)."""
    return settings.device_prefetch()


class InlineBatches:
    """``place(next(iterator))`` in the caller's thread; ``waited`` sums the seconds spent in ``next``."""

    def __init__(self, iterator: Iterator, place: Callable):
        self.iterator, self.place, self.waited = iterator, place, 0.0

    def __next__(self):
        start = time.perf_counter()
        batch = next(self.iterator)
        self.waited += time.perf_counter() - start
        return self.place(batch)

    def close(self) -> None:
        pass


class PrefetchedBatches:
    """``steps`` batches, each ``place(next(iterator))`` run by a background thread up to ``ahead`` batches
    before it is taken; ``waited`` sums the seconds the caller waited for one. The thread reads no batch beyond
    ``steps``, so the iterator stands where the loop's own reads would leave it; an error of the loader or the
    placement is raised by the ``next`` that would have returned that batch. :meth:`close` stops the thread
    (after the batch it is reading) and waits for it."""

    def __init__(self, iterator: Iterator, place: Callable, steps: int, ahead: int):
        self.waited = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iterator, place, steps),
                                        name="ttlx-device-prefetch", daemon=True)
        self._thread.start()

    def _fill(self, iterator: Iterator, place: Callable, steps: int) -> None:
        try:
            for _ in range(steps):
                if not self._put((True, place(next(iterator)))):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the training loop, which raises it
            self._put((False, err))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self):
        start = time.perf_counter()
        ok, value = self._queue.get()
        self.waited += time.perf_counter() - start
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def epoch_batches(iterator: Iterator, place: Callable, steps: int, ahead: int | None = None):
    """The batches of one epoch of ``steps`` train steps, placed by ``place``: read ahead by a background
    thread when ``ahead`` (default :func:`batches_ahead`) is above 0, else in the caller's thread. Call
    ``close()`` when the epoch ends or stops."""
    ahead = batches_ahead() if ahead is None else ahead
    return PrefetchedBatches(iterator, place, steps, ahead) if ahead > 0 else InlineBatches(iterator, place)
