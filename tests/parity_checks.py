"""How the parity tests compare ttlx's outputs with recorded reference outputs (torchvision, PENet, xrv)."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

TOLERANCE = 1e-4  # largest error relative to the reference's largest magnitude


def relative_error(ours, theirs) -> float:
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def errors_at_points(model, x, outputs: dict, names, last: str) -> dict[str, float]:
    """The relative error at every named unit and of the logits computed from unit ``last``, in one program."""
    names = sorted(names)

    @nnx.jit
    def forward(model, x):
        inner = model.intermediates(x)
        return {name: inner[name] for name in names}, model.apply_head(inner[last])

    points, logits = jax.device_get(forward(model, x))
    errors = {name: relative_error(points[name], outputs[name]) for name in names}
    errors["logits"] = relative_error(logits, outputs["logits"])
    return errors
