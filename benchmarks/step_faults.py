"""Wall time, CPU time, page faults and kernel time of single train steps, on pinned cores.

``python benchmarks/step_faults.py --model densenet201-ftl --threads 1 [--steps 3] [--trim-threshold N] [--heap]``

``--trim-threshold`` overrides glibc's trim threshold after ttlx's process settings (e.g. 2147483647, the
largest positive int, which ttlx used before RESULTS section 2.7), to see what the setting is worth.
``--heap`` prints the main glibc heap's free chunks of 1 KiB or more (from ``malloc_info``) after the compile
and after the timed steps: many of them slow every later malloc (RESULTS section 2.8; compare a compile in
the process, ``TTLX_COMPILATION_CACHE=off``, with a program loaded from the cache).
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol  # noqa: E402


def free_heap_chunks() -> tuple[int, int]:
    """(count, MiB) of the main glibc arena's free chunks of at least 1 KiB, read from ``malloc_info``."""
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        handle = libc.fopen(out.name.encode(), b"w")
        libc.malloc_info(0, handle)
        libc.fclose(handle)
        main_arena = Path(out.name).read_text().split("</heap>")[0]
    sizes = re.findall(r'<size from="(\d+)" to="\d+" total="(\d+)" count="(\d+)"/>', main_arena)
    large = [(int(total), int(count)) for low, total, count in sizes if int(low) >= 1024]
    return sum(count for _, count in large), sum(total for total, _ in large) >> 20


def main() -> None:
    parser = protocol.probe_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trim-threshold", type=int, default=None)
    parser.add_argument("--heap", action="store_true", help="print the heap's free chunks of 1 KiB or more")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(range(args.threads)))
    from ttlx.runtime.process import configure_process

    print(configure_process())
    if args.trim_threshold is not None:
        ctypes.CDLL("libc.so.6").mallopt(-1, args.trim_threshold)  # M_TRIM_THRESHOLD
    import ttlx_side

    step, *_ = ttlx_side.make_train_step(args)
    step()  # compile
    if args.heap:
        print("free heap chunks >= 1 KiB after the compile: {} ({} MiB)".format(*free_heap_chunks()), flush=True)
    for _ in range(args.steps):
        before, wall, cpu = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
        step()
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(f"step {time.perf_counter() - wall:.2f} s, cpu {time.process_time() - cpu:.2f} s, "
              f"minor faults {after.ru_minflt - before.ru_minflt}, kernel {after.ru_stime - before.ru_stime:.2f} s, "
              f"peak RSS {after.ru_maxrss // 1024} MiB",
              flush=True)
    if args.heap:
        print("free heap chunks >= 1 KiB after the steps: {} ({} MiB)".format(*free_heap_chunks()), flush=True)


if __name__ == "__main__":
    main()
