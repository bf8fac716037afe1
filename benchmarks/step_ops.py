"""Where a train step's time goes, op by op: one traced step of a benchmark model on pinned cores, each
XLA op's time joined with its output shape from the optimized HLO, summed by (op kind, spatial size).

``python benchmarks/step_ops.py --model densenet201-ftl --threads 1 [--top 45] [--hlo OUT.txt] [--keep DIR]``

The spatial size (e.g. ``56x56``) tells which stage of the network an op belongs to; ``other`` holds ops
whose output is not a batch of feature maps (dots on flattened rows, reductions, tuples). Op times come
from a perfetto trace with ``--xla_cpu_enable_xprof_traceme=true``; at two or more threads ops overlap
and library calls return before their work ends, so read one-thread profiles.

Where an accelerator runs the step (``--dtype bfloat16 --batch-size 128`` on a GPU), ``--threads`` is
ignored and the op times are the device's. The trace's tracks (a GPU trace can show one op on more than
one line, e.g. its stream and an "XLA Ops" line) are listed with their totals first, so that double
counting shows; ``--keep DIR`` copies the raw trace and the optimized HLO to DIR to be read elsewhere.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import shutil
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


def trace_events(trace_dir: str) -> list[dict]:
    """The events of the newest perfetto trace under ``trace_dir``."""
    files = sorted(Path(trace_dir).rglob("*.trace.json.gz"))
    return json.load(gzip.open(files[-1]))["traceEvents"]


def op_events(events: list[dict]) -> list[tuple[str, dict]]:
    """(track, event) for every XLA op event; a track is "process / thread" as the trace names them."""
    names = {}
    for event in events:
        if event.get("ph") == "M" and event.get("name") in ("process_name", "thread_name"):
            key = event["pid"] if event["name"] == "process_name" else (event["pid"], event.get("tid"))
            names[key] = event.get("args", {}).get("name", "")
    return [(f"{names.get(e.get('pid'), e.get('pid'))} / {names.get((e.get('pid'), e.get('tid')), e.get('tid'))}", e)
            for e in events if e.get("ph") == "X" and e.get("args", {}).get("hlo_op")]


def op_tracks(events: list[dict]) -> collections.Counter:
    """Milliseconds of XLA ops per track."""
    tracks = collections.Counter()
    for track, event in op_events(events):
        tracks[track] += event["dur"] / 1e3
    return tracks


def op_times(events: list[dict], shapes: dict[str, str], batch: int, track: str | None = None) -> collections.Counter:
    """Milliseconds per (op kind, spatial size), over every track or only ``track``."""
    times = collections.Counter()
    for where, event in op_events(events):
        if track is not None and where != track:
            continue
        name = event["name"] if event["name"] in shapes else str(event["args"]["hlo_op"])
        times[(re.sub(r"\.\d+$", "", name), spatial(shapes.get(name, ""), batch))] += event["dur"] / 1e3
    return times


def main() -> None:
    parser = protocol.probe_arguments(__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--hlo", default=None, help="also write the optimized HLO text here")
    parser.add_argument("--keep", default=None, help="copy the raw trace and the optimized HLO to this folder")
    args = parser.parse_args()
    from ttlx.runtime.process import _cpu_backend_expected, configure_process

    on_cpu = _cpu_backend_expected()
    if on_cpu:
        os.sched_setaffinity(0, set(range(args.threads)))
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    configure_process()
    import jax
    import ttlx_side

    step, steps, state, batch, _ = ttlx_side.make_train_step(args)
    hlo = steps.train.lower(state["train"], batch).compile().as_text()
    for path in filter(None, (args.hlo, args.keep and Path(args.keep, "optimized_hlo.txt"))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(hlo)
    step()
    step()
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        step()
        jax.profiler.stop_trace()
        if args.keep:
            shutil.copytree(trace_dir, Path(args.keep, "trace"), dirs_exist_ok=True)
        events = trace_events(trace_dir)
    report(events, hlo, args.batch_size, args.top, jax.default_backend(), one_track=not on_cpu)


def report(events: list[dict], hlo: str, batch: int, top: int, backend: str, one_track: bool) -> None:
    """Print op time per track, then per (op kind, spatial size); ``one_track`` reads only the busiest track
    (on a GPU, where one op can show on more than one line)."""
    tracks = op_tracks(events)
    if not tracks:  # no event names its XLA op: show what the trace has, for reading the kept files
        busy = collections.Counter()
        for event in events:
            if event.get("ph") == "X":
                busy[(event.get("pid"), event.get("tid"), event.get("name", "")[:60])] += event.get("dur", 0) / 1e3
        print("no event carries an hlo_op; the longest (pid, tid, name) in the trace:")
        for key, ms in busy.most_common(top):
            print(f"{ms:9.2f}  {key}")
        return
    print(f"backend {backend}; XLA op time per track: "
          + "; ".join(f"{name} {ms:.1f} ms" for name, ms in tracks.most_common()))
    track = tracks.most_common(1)[0][0] if one_track else None
    times = op_times(events, instruction_shapes(hlo), batch, track)
    by_size = collections.Counter()
    for (_, size), ms in times.items():
        by_size[size] += ms
    print(f"XLA ops{'' if track is None else ' on ' + track}: {sum(times.values()):.1f} ms; by spatial size: "
          + ", ".join(f"{size} {ms:.1f}" for size, ms in by_size.most_common()))
    for (kind, size), ms in times.most_common(top):
        print(f"{ms:9.2f}  {kind:34s} {size}")


if __name__ == "__main__":
    main()
