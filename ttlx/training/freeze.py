"""Layer-wise fine-tuning (LWFT): which variables the frozen bottom of a network holds, and freezing them.

``--freeze-until K`` freezes the stem plus the first K blocks (block-wise models; ResNet50: stages,
DenseNet201: dense block + transition) or the first K units (layer-wise models: bottlenecks, dense
layers); 0 freezes the stem only. The frozen variables are found by tracing the kept units and seeing
which variables they read, so any registered architecture works without a hand-kept name list. Frozen
parameters get no updates (``optax.set_to_zero``, no Adam moments) and frozen BatchNorm layers use and
keep their running statistics in training mode.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.errors import ConfigError
from ttlx.models.architecture import Architecture

Path = tuple  # an nnx state path such as ('layer1', 0, 'conv1', 'kernel')


def units_to_freeze(arch: Architecture, cfg: ModelConfig, freeze_until: int) -> int:
    """How many of the model's units (the stem counts as one) ``--freeze-until`` covers."""
    if cfg.layerwise:
        if not 0 <= freeze_until <= cfg.trunc:
            raise ConfigError(
                f"--freeze-until {freeze_until} does not fit a layer-wise model with {cfg.trunc} "
                f"{arch.unit_name}s; choose 0 to {cfg.trunc}."
            )
        return 1 + freeze_until
    kept = arch.block_points[1:] if cfg.trunc == -1 else [p for p in arch.block_points if 0 < p <= cfg.trunc]
    if freeze_until != 0 and freeze_until not in kept:
        choices = ", ".join(str(p) for p in (0, *kept))
        raise ConfigError(
            f"--freeze-until {freeze_until} does not fit {arch.name} truncated at {cfg.trunc}; "
            f"choose one of {choices} (0 freezes the stem only)."
        )
    if freeze_until == 0:
        return 1
    part = dataclasses.replace(cfg, trunc=freeze_until, head=None)
    return len(list(nnx.eval_shape(lambda: arch.build(part, nnx.Rngs(0))).units()))


def variables_read(model: nnx.Module, units: int, image_size: int) -> set[Path]:
    """Paths of the variables (parameters and BatchNorm statistics) that the first ``units`` units read.

    The units run on an abstract input with running BatchNorm statistics; a variable is read when its
    input to the traced program is used by some operation.
    """
    eval_model = nnx.view(model, use_running_average=True, raise_if_not_found=False)
    graphdef, state = nnx.split(eval_model)
    flat = list(nnx.to_flat_state(state))

    def forward(state, x):
        net = nnx.merge(graphdef, state)
        for _, fn in itertools.islice(net.units(), units):
            x = fn(x)
        return x

    from ttlx.models.abstract import input_shape  # images, or a 3D network's windows

    x = jax.ShapeDtypeStruct(input_shape(model, image_size), "float32")
    closed = jax.make_jaxpr(forward)(state, x)
    used = {id(v) for eqn in closed.jaxpr.eqns for v in eqn.invars}
    used |= {id(v) for v in closed.jaxpr.outvars}
    state_vars = closed.jaxpr.invars[: len(flat)]
    return {path for (path, _), var in zip(flat, state_vars, strict=True) if id(var) in used}


def frozen_paths(model: nnx.Module, arch: Architecture, cfg: ModelConfig,
                 freeze_until: int | None) -> set[Path]:
    """The variables ``--freeze-until`` freezes (empty when it is None)."""
    if freeze_until is None:
        return set()
    return variables_read(model, units_to_freeze(arch, cfg, freeze_until), cfg.image_size)


def freeze_batchnorm(model: nnx.Module, frozen: set[Path]) -> int:
    """Make the frozen BatchNorm layers normalise with, and keep, their running statistics.

    Call after ``model.train()`` (which switches every BatchNorm to batch statistics); returns how many
    layers were frozen.
    """
    count = 0
    for path, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm) and (*path, "mean") in frozen:
            module.use_running_average = True
            count += 1
    return count


def param_labels(params: nnx.State, frozen: set[Path], classifier_key: str):
    """A pytree like ``params`` labelling each leaf 'frozen', 'head' or 'backbone' (optax.multi_transform)."""
    def label(path, _):
        keys = _state_path(path)
        if keys in frozen:
            return "frozen"
        return "head" if keys[0] == classifier_key else "backbone"

    return jax.tree_util.tree_map_with_path(label, params)


def _state_path(keypath) -> Path:
    """('layer1', 0, 'kernel') from a jax key path into an nnx State (dropping the trailing '.value')."""
    out = []
    for key in keypath:
        if isinstance(key, jax.tree_util.DictKey):
            out.append(key.key)
        elif isinstance(key, jax.tree_util.SequenceKey):
            out.append(key.idx)
    return tuple(out)
