"""Activations of every kept unit of a network over batches of images, reduced inside one jitted pass.

The full maps never leave the compiled function: SVCCA takes a random subset of spatial positions per
image and the probe takes the global average, so even DenseNet201's 98 dense-layer outputs fit in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def unit_names(model) -> list[str]:
    """Names of the stem and of every kept unit, in forward order."""
    return [name for name, _ in model.units()]


def image_batches(batches: Iterable, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images [B,S,S,3], real-example count) from loader dicts or plain arrays, stopping after ``limit``.

    Padded rows (``mask`` 0) are counted out, but the batch keeps its shape so jit compiles once.
    """
    seen = 0
    for batch in batches:
        images = np.asarray(batch["image"] if isinstance(batch, dict) else batch, np.float32)
        real = int(np.sum(batch["mask"])) if isinstance(batch, dict) and "mask" in batch else len(images)
        if limit is not None:
            real = min(real, limit - seen)
        if real <= 0:
            break
        seen += real
        yield images, real


def take(batches: Iterable, limit: int | None = None) -> list[dict]:
    """The first ``limit`` real examples of ``batches`` as a list (read once, then reused), shapes kept."""
    kept = []
    for images, real in image_batches(batches, limit):
        mask = (np.arange(len(images)) < real).astype(np.float32)
        kept.append({"image": images, "mask": mask})
    return kept


def position_indices(shapes: list[tuple[int, ...]], batch: int, positions: int, seed: int,
                     index: int) -> list[np.ndarray | None]:
    """Per unit, [B, k] distinct flat positions for each image of batch ``index`` (None: keep them all).

    Drawn with numpy from (seed, batch index, unit index, map size), so two networks with the same map
    sizes are sampled at the same places; numpy also keeps random-number code out of the compiled pass.
    """
    chosen = []
    for unit, shape in enumerate(shapes):
        cells = int(np.prod(shape[1:-1]))
        if len(shape) == 2 or positions >= cells:
            chosen.append(None)
            continue
        rng = np.random.default_rng([seed, index, unit, cells])
        chosen.append(np.argsort(rng.random((batch, cells)), axis=1)[:, :positions].astype(np.int32))
    return chosen


def _reduce(acts: jax.Array, positions: int | None, chosen) -> jax.Array:
    """[B, ..., C] -> the global average [B, C] (positions None) or the chosen positions [B, k, C]."""
    acts = acts.astype(jnp.float32)  # bfloat16 runs: the statistics downstream want full precision
    if positions is None:
        return jnp.mean(acts, axis=tuple(range(1, acts.ndim - 1))) if acts.ndim > 2 else acts
    flat = acts.reshape(acts.shape[0], -1, acts.shape[-1])
    return flat if chosen is None else jnp.take_along_axis(flat, chosen[:, :, None], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _reduced_intermediates(graphdef, state, images, chosen, positions: int | None) -> list[jax.Array]:
    """Every unit's reduced activations; compiled once per graph, image shape and ``positions``."""
    out = nnx.merge(graphdef, state).intermediates(images)
    # a list, not a dict: jit would hand a dict back with its keys sorted, not in forward order
    return [_reduce(acts, positions, c) for acts, c in zip(out.values(), chosen, strict=True)]


def map_shapes(model, image_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Output shape of every unit for a batch of ``image_shape`` (traced, not computed)."""
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: list(nnx.merge(graphdef, s).intermediates(x).values()), state,
                         jax.ShapeDtypeStruct(image_shape, jnp.float32))
    return [o.shape for o in out]


def collect(model, batches: Iterable, *, positions: int | None = None, limit: int | None = None,
            seed: int = 0) -> dict[str, np.ndarray]:
    """Every unit's activations over ``batches``, in eval mode.

    ``positions=None``: the global average, [N, C] per unit (the probe's features). ``positions=k``:
    k random positions per image, [N * k, C] per unit (SVCCA's data points, as in ``position_indices``).
    """
    model.eval()
    graphdef, state = nnx.split(model)
    names = unit_names(model)
    parts: dict[str, list[np.ndarray]] = {}
    shapes = None
    for index, (images, real) in enumerate(image_batches(batches, limit)):
        chosen = [None] * len(names)
        if positions is not None:
            shapes = shapes or map_shapes(model, images.shape)
            chosen = position_indices(shapes, len(images), positions, seed, index)
        reduced = _reduced_intermediates(graphdef, state, jnp.asarray(images), chosen, positions)
        for name, acts in zip(names, reduced, strict=True):
            acts = np.asarray(acts)[:real]
            parts.setdefault(name, []).append(acts.reshape(-1, acts.shape[-1]))
    if not parts:
        raise ValueError("No images to compute activations on.")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
