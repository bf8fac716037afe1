"""Bytes that each op of a compiled XLA program reads and writes, from its optimized HLO text: for a step whose
time memory traffic sets, where the bytes go and what two programs differ by (RESULTS section 6.1).

    python benchmarks/hlo_bytes.py HLO [HLO ...] [--batch 128] [--top 25] [--bandwidth 3.35e12]

``HLO``: optimized HLO text, e.g. ``step_ops.py --keep DIR``'s ``DIR/optimized_hlo.txt`` (``.gz`` is read as
is). Every instruction of the ENTRY computation that does work (fusions, custom calls such as cuDNN
convolutions, copies) counts its operands' and its outputs' bytes once each; scratch buffers (``u8``) are
left out. That is the traffic of a program whose ops each read their inputs once and keep nothing in cache
between ops: an estimate, not a measurement. Ops are grouped by kind and by the largest side of a
``[batch, H, W, C]`` activation they touch. With two or more files, the first one's bytes over each other's.
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 0, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                 "f32": 4, "s64": 8, "u64": 8, "f64": 8}
SHAPE = re.compile(r"\b(" + "|".join(ELEMENT_BYTES) + r")\[([0-9,]*)\]")
INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
NO_WORK = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant"}


@dataclass(frozen=True)
class Op:
    name: str
    kind: str  # the custom call's target, the fusion's kind (kLoop, kInput, ...) or the opcode
    out_bytes: int
    in_bytes: int
    side: int | None  # largest H of a [batch, H, W, C] operand or output; None when it touches none

    @property
    def bytes(self) -> int:
        return self.out_bytes + self.in_bytes


def shape_bytes(text: str) -> int:
    """Bytes of every array shape in ``text`` (a type, or a tuple of them)."""
    total = 0
    for element, dims in SHAPE.findall(text):
        count = 1
        for dim in filter(None, dims.split(",")):
            count *= int(dim)
        total += count * ELEMENT_BYTES[element]
    return total


def read_hlo(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return f.read()


def entry_ops(text: str, batch: int) -> list[Op]:
    """The working instructions of the ENTRY computation, in program order."""
    types, ops, in_entry = {}, [], False
    activation = re.compile(rf"\[{batch},(\d+),\d+,\d+\]")
    for line in text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
            continue
        match = INSTRUCTION.match(line) if in_entry else None
        if match is None:
            continue
        name, out_type, opcode, rest = match.groups()
        types[name] = out_type
        if opcode in NO_WORK:
            continue
        operands = [types.get(arg.strip()[1:], "") for arg in rest.split(")", 1)[0].split(",")
                    if arg.strip().startswith("%")]
        target = re.search(r'custom_call_target="([^"]+)"', line)
        fusion = re.search(r"kind=(k\w+)", line)
        kind = target.group(1) if target else fusion.group(1) if fusion else opcode
        sides = [int(h) for h in activation.findall(" ".join([out_type, *operands]))]
        ops.append(Op(name, kind, shape_bytes(out_type), sum(map(shape_bytes, operands)), max(sides, default=None)))
    return ops


def grouped(ops: list[Op], key) -> list[tuple[object, int, int]]:
    """(group, op count, bytes) by ``key(op)``, most bytes first."""
    count, total = Counter(), Counter()
    for op in ops:
        count[key(op)] += 1
        total[key(op)] += op.bytes
    return [(group, count[group], moved) for group, moved in total.most_common()]


def report(path: Path, ops: list[Op], bandwidth: float, top: int) -> str:
    total = sum(op.bytes for op in ops)
    lines = [f"{path}: {len(ops)} ops, {total / 1e9:.2f} GB read and written, {total / bandwidth * 1e3:.2f} ms "
             f"at {bandwidth / 1e12:g} TB/s", "  by kind:"]
    lines += [f"    {kind:36} {n:5d} ops {moved / 1e9:8.2f} GB" for kind, n, moved in grouped(ops, lambda op: op.kind)]
    lines.append("  by largest activation side touched:")
    lines += [f"    {'none' if side is None else side:>6} {n:5d} ops {moved / 1e9:8.2f} GB"
              for side, n, moved in grouped(ops, lambda op: op.side)]
    if top:
        lines.append(f"  {top} largest:")
        lines += [f"    {op.bytes / 1e6:8.0f} MB  {op.kind:34} {op.name}"
                  for op in sorted(ops, key=lambda op: -op.bytes)[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hlo", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=128, help="batch size of the activations (for grouping)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--bandwidth", type=float, default=3.35e12, help="bytes/s (default: an H100 SXM's HBM3)")
    args = parser.parse_args()
    totals = []
    for path in args.hlo:
        ops = entry_ops(read_hlo(path), args.batch)
        totals.append(sum(op.bytes for op in ops))
        print(report(path, ops, args.bandwidth, args.top))
    for path, total in zip(args.hlo[1:], totals[1:]):
        print(f"bytes {args.hlo[0].name} over {path}: {totals[0] / total:.3f}")


if __name__ == "__main__":
    main()
