"""What both sides of a benchmark share: the compared models, thread pinning, timing and the reply format.

Standard library only: the reference side imports this from an interpreter that has torch but not ttlx.
Each side script prints one line ``BENCH_RESULT {json}`` on stdout; ``run.py`` reads it back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

RESULT_PREFIX = "BENCH_RESULT "

# The networks of the issue, built the same way on both sides: random weights, the reference code's
# default flatten head, two classes (the paper's BIMCV task).
MODELS = {
    "resnet50-ftl": {"arch": "resnet50", "trunc": -1, "layerwise": False, "label": "ResNet50 FTL"},
    "resnet50-ttl1": {"arch": "resnet50", "trunc": 3, "layerwise": False, "label": "ResNet50 TTL-1 (trunc 3)"},
    "resnet50-ttl2": {"arch": "resnet50", "trunc": 11, "layerwise": True,
                      "label": "ResNet50 TTL-2 (11 bottlenecks)"},
    "densenet201-ftl": {"arch": "densenet201", "trunc": -1, "layerwise": False, "label": "DenseNet201 FTL"},
}
HEAD = "flatten"
NUM_CLASSES = 2
LEARNING_RATE = 1e-4  # Adam, as the reference recipe
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pin_threads(threads: int | None) -> int:
    """Restrict this process to its first ``threads`` allowed cores (before any library starts threads).

    XLA sizes its thread pools from the affinity mask and torch gets ``set_num_threads`` from the
    caller, so both sides compute on the same cores. Returns the number of cores kept.
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        return threads or os.cpu_count() or 1
    keep = allowed[: threads] if threads else allowed
    if len(keep) < len(allowed):
        os.sched_setaffinity(0, keep)
    return len(keep)


def time_steps(step: Callable[[], None], *, warmup: int, steps: int,
               after_first: Callable[[], None] | None = None) -> dict:
    """Run ``step`` (which must wait for its result) ``warmup`` times, then time ``steps`` calls;
    ``after_first`` runs after the first (compiling) call, untimed."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    if after_first is not None:
        after_first()
    for _ in range(max(0, warmup - 1)):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"first_s": first, "step_s": times, "median_s": statistics.median(times), "total_s": sum(times)}


def images_per_second(batch_size: int, timing: dict, *, overall: bool = False) -> float:
    """Images/s from the median step, or from the whole timed run (``overall``: for prefetching
    pipelines, whose single batches arrive in bursts)."""
    if overall:
        return batch_size * len(timing["step_s"]) / timing["total_s"]
    return batch_size / timing["median_s"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def tune_glibc_malloc() -> bool:
    """What ``ttlx.runtime.process.tune_malloc`` does, for running the reference under the same allocator."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # M_ARENA_MAX=1, M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1 (never trim; see ttlx.runtime.process.NEVER_TRIM)
    return all(libc.mallopt(param, value) == 1 for param, value in ((-8, 1), (-4, 0), (-1, -1)))


def emit(result: dict) -> None:
    """Hand ``result`` back to run.py: one prefixed JSON line on stdout."""
    sys.stdout.flush()
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict:
    """The result a side script emitted (the last prefixed line); ValueError when there is none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise ValueError("the benchmark process printed no BENCH_RESULT line")


def side_arguments(description: str) -> argparse.ArgumentParser:
    """The options every side script takes (each measurement uses the ones it needs)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("measurement", choices=("train_step", "pipeline", "latency", "memory", "compile"))
    parser.add_argument("--model", default="resnet50-ftl", choices=sorted(MODELS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (batches, forward passes)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="cores to use (default: all allowed)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--images", default=None, help="pipeline: a folder of JPEGs, one sub-folder per class")
    parser.add_argument("--workdir", default=None, help="pipeline: scratch folder")
    parser.add_argument("--as-shipped", action="store_true",
                        help="pipeline, ttlx only: prepare with ttlx's default --max-size (shorter side <= 256 px) "
                             "instead of storing the JPEGs as they are")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="reference only: apply ttlx's glibc allocator settings (a fairness check)")
    return parser
