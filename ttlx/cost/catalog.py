"""The table behind ``ttlx models``: every registered architecture, its truncation points, the feature map
each point outputs and the backbone parameters it keeps.

Everything comes from shape-only builds (``nnx.eval_shape``) and traces: no weight is allocated. Block-wise
points are built one by one. Layer-wise points (99 for DenseNet201) would take half a minute that way,
so they are read off one trace of the deepest network: a point's parameters are those its last kept unit's
output depends on, since a truncated network is a prefix of the units of the deepest one.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.cost.model_cost import count_params
from ttlx.models.abstract import abstract_model, input_shape
from ttlx.models.architecture import Architecture


@dataclass(frozen=True)
class UnitProfile:
    """Output shape (NHWC, batch 1) and parameters kept up to each unit of a network, by unit name."""

    shapes: dict[str, tuple[int, ...]]
    params_through: dict[str, int]


def registered_architectures() -> list[Architecture]:
    """Every registered model that is an architecture (legacy names only point at one)."""
    from ttlx import registry

    return [e.obj for e in registry.models.entries() if isinstance(e.obj, Architecture)]


def _param_dependencies(jaxpr: jax_core.Jaxpr, n_params: int) -> list[int]:
    """For each output, a bitmask of the first ``n_params`` inputs it depends on."""
    deps = {var: 1 << i for i, var in enumerate(jaxpr.invars[:n_params])}

    def of(var) -> int:
        return deps.get(var, 0) if isinstance(var, jax_core.Var) else 0

    for eqn in jaxpr.eqns:
        mask = 0
        for var in eqn.invars:
            mask |= of(var)
        for out in eqn.outvars:
            deps[out] = mask
    return [of(var) for var in jaxpr.outvars]


def unit_profile(model: nnx.Module, image_size: int) -> UnitProfile:
    """Trace the units of ``model`` once, with its parameters as explicit inputs."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(params)

    def intermediates(leaves, rest, x):
        net = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)
        net.eval()
        return net.intermediates(x)

    x = jax.ShapeDtypeStruct(input_shape(model, image_size), jnp.float32)
    closed, outputs = jax.make_jaxpr(intermediates, return_shape=True)(leaves, rest, x)
    names = [path[0].key for path, _ in jax.tree_util.tree_flatten_with_path(outputs)[0]]
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    masks = _param_dependencies(closed.jaxpr, len(leaves))
    params = {name: sum(size for i, size in enumerate(sizes) if mask >> i & 1)
              for name, mask in zip(names, masks, strict=True)}
    return UnitProfile({name: out.shape for name, out in outputs.items()}, params)


def layer_units(model: nnx.Module, num_units: int) -> list[str] | None:
    """Names of the units that layer-wise points count: the one unit class with ``num_units`` members.

    None when no class (or more than one) fits; the caller then builds every point.
    """
    units = [(name, fn) for name, fn in model.units() if isinstance(fn, nnx.Module)]
    counts = Counter(type(fn) for _, fn in units)
    fits = [cls for cls, count in counts.items() if count == num_units]
    if len(fits) != 1:
        return None
    return [name for name, fn in units if type(fn) is fits[0]]


def chw(shape: tuple[int, ...]) -> str:
    """'256x56x56' for an NHWC shape, '2048x2x6x6' (CxDxHxW) for an NDHWC one: channels first, as the paper
    and torch write it."""
    return "x".join(str(d) for d in (shape[-1], *shape[1:-1]))


def _row(arch: Architecture, cfg: ModelConfig, last_unit: str, shape, params: int) -> dict[str, Any]:
    return {"architecture": arch.name, "trunc": cfg.trunc, "layerwise": cfg.layerwise, "last_unit": last_unit,
            "output_chw": chw(shape), "params": params}


def _config(arch: Architecture, trunc: int, layerwise: bool, image_size: int,
            window: int | None = None) -> ModelConfig:
    return ModelConfig(arch=arch.name, trunc=trunc, layerwise=layerwise, head=None, image_size=image_size,
                       window=window if arch.spatial_dims == 3 else None)


def built_row(arch: Architecture, cfg: ModelConfig, profile: UnitProfile) -> dict[str, Any]:
    """The row of one point, from its own shape-only build (shapes from the deepest network's profile)."""
    model = abstract_model(arch, cfg)
    last_unit = [name for name, _ in model.units()][-1]
    return _row(arch, cfg, last_unit, profile.shapes[last_unit], count_params(model)[0])


def layerwise_rows(arch: Architecture, deepest: nnx.Module, profile: UnitProfile,
                   image_size: int, window: int | None = None) -> list[dict[str, Any]]:
    """Rows of every layer-wise point 0..num_units, read off the deepest network's profile."""
    configs = [_config(arch, n, True, image_size, window) for n in arch.layer_points()]
    counted = layer_units(deepest, arch.num_units)
    if counted is None:
        return [built_row(arch, cfg, profile) for cfg in configs]
    all_units = [name for name, _ in deepest.units()]
    last_units = [all_units[0], *counted[:-1], all_units[-1]]  # the last point keeps the final units too
    return [_row(arch, cfg, unit, profile.shapes[unit], profile.params_through[unit])
            for cfg, unit in zip(configs, last_units, strict=True)]


def architecture_rows(arch: Architecture, image_size: int = 224, layerwise: bool = False,
                      window: int | None = None) -> list[dict[str, Any]]:
    """Rows for the block-wise points of ``arch`` and, with ``layerwise``, for every layer-wise point.

    A 3D architecture takes windows of ``window`` slices (None: its default of 24) of ``image_size`` pixels.
    """
    has_layers = arch.num_units > 0
    deepest_cfg = _config(arch, arch.num_units if has_layers else -1, has_layers, image_size, window)
    deepest = abstract_model(arch, deepest_cfg)
    profile = unit_profile(deepest, image_size)
    rows = [built_row(arch, _config(arch, t, False, image_size, window), profile) for t in arch.block_points]
    if layerwise and has_layers:
        rows.extend(layerwise_rows(arch, deepest, profile, image_size, window))
    return rows


def model_table(image_size: int = 224, layerwise: bool = False, window: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``ttlx models``: every registered architecture at every truncation point (3D ones on windows
    of ``window`` slices, default 24)."""
    from ttlx.errors import ConfigError

    if image_size < 32:
        raise ConfigError(f"--image-size {image_size} is too small; use at least 32 pixels.")
    return [row for arch in registered_architectures()
            for row in architecture_rows(arch, image_size, layerwise, window)]
