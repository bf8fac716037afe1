"""The full ttlx train step of a benchmark model on pinned cores: process CPU time per step (1 thread),
and optionally a per-op profile of one step (XLA op names from a perfetto trace, summed).

``python benchmarks/densenet_profile.py --model densenet201-ftl --threads 1 --trace /tmp/trace``
(``--layerwise-forward`` runs DenseNet's dense layers one by one through ``units()``, the code before
the block-wise forward, to compare).
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol  # noqa: E402


def op_table(folder: str, top: int) -> list:
    """Milliseconds per kind of XLA op in the trace (op names without their numeric suffix)."""
    from step_ops import op_times, trace_events

    by_kind = collections.Counter()
    for (kind, _), ms in op_times(trace_events(folder), {}, batch=0).items():
        by_kind[kind] += ms
    return [("all XLA ops", round(sum(by_kind.values()), 1))] + [
        (name, round(ms, 1)) for name, ms in by_kind.most_common(top)]


def main():
    parser = protocol.probe_arguments(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trace", default=None)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--layerwise-forward", action="store_true")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(range(args.threads)))
    if args.trace:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    from ttlx.runtime.process import configure_process

    configure_process()
    import jax

    if args.layerwise_forward:
        from ttlx.models.densenet import DenseNet
        from ttlx.models.heads import Network

        DenseNet.forward_features = Network.forward_features
    import ttlx_side

    step = ttlx_side.make_train_step(args)[0]
    clock = time.process_time if args.threads == 1 else time.perf_counter
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    step()
    times = []
    for _ in range(args.steps):
        start = clock()
        step()
        times.append(clock() - start)
    result = {"model": args.model, "threads": args.threads, "layerwise_forward": args.layerwise_forward,
              "first_s": first, "step_s": times, "median_s": statistics.median(times)}
    if args.trace:
        jax.profiler.start_trace(args.trace, create_perfetto_trace=True)
        step()
        jax.profiler.stop_trace()
        result["ops_ms"] = op_table(args.trace, args.top)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
