"""Run ``prepare_dataset`` of ``synthetic`` and SIGKILL this process part-way (used by test_prepare_kill.py).

usage: python prepare_kill_job.py DATA_DIR WHERE N OPTIONS_JSON
  WHERE encode: die right after the N-th image was encoded (on a builder thread);
  WHERE marker: die right after the N-th prepared.json was written (the build is complete but not moved
  into place yet); WHERE swap: die right after the N-th rename of the swap (1: the old dataset was moved
  aside, the new one not yet moved in). OPTIONS_JSON holds prepare_dataset's keyword arguments (count,
  size, seed, force).
"""

import json
import os
import signal
import sys
import threading

from ttlx.data import images, prepare, store
from ttlx.data.prepare import prepare_dataset

TARGETS = {"encode": (images, "encode"), "marker": (store, "write_marker"), "swap": (prepare, "_move")}


def die_after(where: str, n: int) -> None:
    """Wrap the function named by ``where`` so that its n-th return kills the process with SIGKILL."""
    module, name = TARGETS[where]
    original, lock, calls = getattr(module, name), threading.Lock(), [0]

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        with lock:
            calls[0] += 1
            if calls[0] == n:
                print(f"SIGKILL after {where} call {n}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, wrapper)


if __name__ == "__main__":
    data_dir, where, n, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    die_after(where, n)
    prepare_dataset("synthetic", data_dir, **options)
    print("finished", flush=True)
