"""Wall time, CPU time, page faults and kernel time of single train steps, on pinned cores.

``python benchmarks/step_faults.py --model densenet201-ftl --threads 1 [--steps 3] [--trim-threshold N]``

``--trim-threshold`` overrides glibc's trim threshold after ttlx's process settings (e.g. 2147483647, the
largest positive int, which ttlx used before RESULTS section 2.7), to see what the setting is worth.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet201-ftl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trim-threshold", type=int, default=None)
    args = parser.parse_args()
    os.sched_setaffinity(0, set(range(args.threads)))
    from ttlx.performance import configure_process

    print(configure_process())
    if args.trim_threshold is not None:
        ctypes.CDLL("libc.so.6").mallopt(-1, args.trim_threshold)  # M_TRIM_THRESHOLD
    import ttlx_side

    options = argparse.Namespace(model=args.model, image_size=args.image_size, dtype="float32", plain=False,
                                 batch_size=args.batch_size)
    step, *_ = ttlx_side.make_train_step(options)
    step()  # compile
    for _ in range(args.steps):
        before, wall, cpu = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
        step()
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(f"step {time.perf_counter() - wall:.2f} s, cpu {time.process_time() - cpu:.2f} s, "
              f"minor faults {after.ru_minflt - before.ru_minflt}, kernel {after.ru_stime - before.ru_stime:.2f} s, "
              f"peak RSS {after.ru_maxrss // 1024} MiB",
              flush=True)


if __name__ == "__main__":
    main()
