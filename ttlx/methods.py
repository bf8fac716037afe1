"""The paper's methods, as one table: name, what it is, the ``ttlx train`` flags that make it, and how a run
of it is labelled in sweep tables (``ftl full``, ``ttl t2``, ``ttl lw11``, ``lwft freeze1``, ``tf slim3``).

Every place that names a method (``ttlx sweep``'s grid, the summary and paired tables, the docs) reads it
from here, so a method is added in one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    flags: str  # the ``ttlx train`` flags, for help texts and the docs
    points: str  # the grid's option holding this method's points ("" for one point)
    order: int  # where its rows sort in a summary table


METHODS = {m.name: m for m in (
    Method("ftl", "Full fine-tuning of the whole pretrained network", "--trunc -1", "", 999),
    Method("ttl", "Truncated transfer learning: fine-tune the stem and the first K blocks (or units)",
           "--trunc K [--layerwise]", "trunc, layerwise", 0),
    Method("lwft", "Layer-wise fine-tuning: freeze the stem and the first K blocks of the whole network",
           "--trunc -1 --freeze-until K", "freeze", 2000),
    Method("tf", "Coarsened top (TF slim): stages from S on with fewer channels, randomly initialised",
           "--trunc -1 --slim-from S", "slim_from", 1000),
)}


def overrides(method: str, point: int | None = None, *, layerwise: bool = False) -> dict[str, Any]:
    """The training-config values that make ``method`` at ``point``."""
    if method == "ftl":
        return {"trunc": -1}
    if method == "ttl":
        return {"trunc": point, "layerwise": True} if layerwise else {"trunc": point}
    if method == "lwft":
        return {"trunc": -1, "freeze_until": point}
    if method == "tf":
        return {"trunc": -1, "slim_from": point}
    raise KeyError(method)


def run_label(train: dict[str, Any]) -> tuple[str, str, int]:
    """(method, point, sort key) of a run's training config, e.g. ("ttl", "lw11", 11); the inverse of
    :func:`overrides`."""
    if train.get("slim_from") is not None:
        return "tf", f"slim{train['slim_from']}", METHODS["tf"].order + train["slim_from"]
    if train.get("freeze_until") is not None:
        return "lwft", f"freeze{train['freeze_until']}", METHODS["lwft"].order + train["freeze_until"]
    if train.get("layerwise"):
        return "ttl", f"lw{train['trunc']}", train["trunc"]
    if train["trunc"] == -1:
        return "ftl", "full", METHODS["ftl"].order
    return "ttl", f"t{train['trunc']}", 100 * train["trunc"]
