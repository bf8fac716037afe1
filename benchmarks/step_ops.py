"""Where a train step's time goes, op by op: one traced step of a benchmark model on pinned cores, each
XLA op's time joined with its output shape from the optimized HLO, summed by (op kind, spatial size).

``python benchmarks/step_ops.py --model densenet201-ftl --threads 1 [--top 45] [--hlo OUT.txt]``

The spatial size (e.g. ``56x56``) tells which stage of the network an op belongs to; ``other`` holds ops
whose output is not a batch of feature maps (dots on flattened rows, reductions, tuples). Op times come
from a perfetto trace with ``--xla_cpu_enable_xprof_traceme=true``; at two or more threads ops overlap
and library calls return before their work ends, so read one-thread profiles.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol  # noqa: E402


def instruction_shapes(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its output shape, e.g. ``concatenate.12 -> f32[16,14,14,544]``."""
    shapes = {}
    for line in hlo_text.splitlines():
        match = re.match(r"(?:ROOT )?%?([\w.-]+) = (\S+?)[ {]", line.strip())
        if match:
            shapes[match.group(1)] = match.group(2)
    return shapes


def spatial(shape: str, batch: int) -> str:
    match = re.search(r"\[(\d+),(\d+),(\d+),(\d+)\]", shape)
    return f"{match.group(2)}x{match.group(3)}" if match and int(match.group(1)) == batch else "other"


def op_times(trace_dir: str, shapes: dict[str, str], batch: int) -> collections.Counter:
    """Milliseconds per (op kind, spatial size) in the newest trace under ``trace_dir``."""
    files = sorted(Path(trace_dir).rglob("*.trace.json.gz"))
    times = collections.Counter()
    for event in json.load(gzip.open(files[-1]))["traceEvents"]:
        if event.get("ph") == "X" and event.get("args", {}).get("hlo_op"):
            name = event["name"]
            times[(re.sub(r"\.\d+$", "", name), spatial(shapes.get(name, ""), batch))] += event["dur"] / 1e3
    return times


def main() -> None:
    parser = protocol.probe_arguments(__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--hlo", default=None, help="also write the optimized HLO text here")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(range(args.threads)))
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    from ttlx.performance import configure_process

    configure_process()
    import jax
    import ttlx_side

    step, steps, state, batch, _ = ttlx_side.make_train_step(args)
    hlo = steps.train.lower(state["train"], batch).compile().as_text()
    if args.hlo:
        Path(args.hlo).write_text(hlo)
    step()
    step()
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        step()
        jax.profiler.stop_trace()
        times = op_times(trace_dir, instruction_shapes(hlo), args.batch_size)
    by_size = collections.Counter()
    for (_, size), ms in times.items():
        by_size[size] += ms
    print(f"all XLA ops: {sum(times.values()):.0f} ms; by spatial size: "
          + ", ".join(f"{size} {ms:.0f}" for size, ms in by_size.most_common()))
    for (kind, size), ms in times.most_common(args.top):
        print(f"{ms:9.1f}  {kind:34s} {size}")


if __name__ == "__main__":
    main()
