"""The paper's methods, as one table: each method's ``ttlx train`` settings and how a run of it is labelled in
sweep tables (``ftl full``, ``ttl t2``, ``ttl lw11``, ``lwft freeze1``, ``tf slim3``).

``ttlx sweep``'s grid makes its runs with :func:`overrides`, and the summary and paired tables label runs with
:func:`run_label`, its inverse; a method is added in one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Method:
    name: str
    option: str | None  # the TrainConfig field (``ttlx train`` flag) holding the method's point
    label: str  # a point's label in tables: this prefix and the point
    order: int  # where its rows sort in a summary table
    fixed: tuple[tuple[str, Any], ...] = ()  # TrainConfig values every run of the method has


METHODS = {m.name: m for m in (
    Method("ftl", None, "full", 999, (("trunc", -1),)),  # full fine-tuning: --trunc -1
    Method("ttl", "trunc", "t", 0),  # truncated transfer learning: --trunc K [--layerwise]
    Method("lwft", "freeze_until", "freeze", 2000, (("trunc", -1),)),  # layer-wise fine-tuning: --freeze-until K
    Method("tf", "slim_from", "slim", 1000, (("trunc", -1),)),  # coarsened top: --slim-from S
)}


def overrides(method: str, point: int | None = None, *, layerwise: bool = False) -> dict[str, Any]:
    """The training-config values that make ``method`` at ``point``."""
    entry = METHODS[method]
    values = dict(entry.fixed)
    if entry.option is not None:
        values[entry.option] = point
    if layerwise:
        values["layerwise"] = True
    return values


def run_label(train: dict[str, Any]) -> tuple[str, str, int]:
    """(method, point, sort key) of a run's training config, e.g. ("ttl", "lw11", 11); the inverse of
    :func:`overrides`."""
    for method in (METHODS["tf"], METHODS["lwft"]):
        point = train.get(method.option)
        if point is not None:
            return method.name, f"{method.label}{point}", method.order + point
    if train.get("layerwise"):
        return "ttl", f"lw{train['trunc']}", train["trunc"]
    if train["trunc"] == -1:
        return "ftl", METHODS["ftl"].label, METHODS["ftl"].order
    return "ttl", f"{METHODS['ttl'].label}{train['trunc']}", 100 * train["trunc"]
