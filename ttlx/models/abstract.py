"""Networks built without real weights: shape-only (for counting) and zero-weight (for timing)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from ttlx.config import ModelConfig


def shape_only_rngs(seed: int = 0) -> nnx.Rngs:
    """``nnx.Rngs`` for building a model under ``nnx.eval_shape`` only: its counters stay host arrays.

    Why: a traced counter makes Flax compare shardings on every draw, and JAX 0.10 answers each
    comparison by scanning the whole trace, so an abstract DenseNet201 takes 4.4 s instead of 0.6 s.
    The keys it draws are not those of ``nnx.Rngs(seed)``: never use it to initialise real weights.
    """
    rngs = nnx.Rngs(seed)
    for stream in vars(rngs).values():
        if isinstance(stream, nnx.RngStream):
            stream.count.set_value(np.zeros((), np.uint32))
    return rngs


def abstract_model(arch: Any, cfg: ModelConfig) -> nnx.Module:
    """The network of ``cfg`` with shapes only: no weight is allocated or initialised."""
    return nnx.eval_shape(lambda: arch.build(cfg, shape_only_rngs(0)))


def zero_weight_model(model: nnx.Module) -> nnx.Module:
    """A copy of an abstract ``model`` whose every array is zeros on the default device, for timing.

    Why: a forward pass takes as long whatever its weights hold, and a random initialisation first
    compiles its own programs (15 s and more for DenseNet201 on 2 CPU cores).
    """

    def zeros(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)  # an RNG stream a plugin keeps (dropout): any key will do
        return np.zeros(leaf.shape, leaf.dtype)

    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.device_put(jax.tree.map(zeros, state)))


def input_shape(model: nnx.Module, image_size: int, batch: int = 1) -> tuple[int, ...]:
    """The input ``model`` takes: NHWC images ``(batch, size, size, 3)``, or what a network that says
    otherwise returns from its ``input_shape`` (3D networks: NDHWC windows ``(batch, window, size, size, 1)``)."""
    own = getattr(model, "input_shape", None)
    return tuple(own(image_size, batch)) if callable(own) else (batch, image_size, image_size, 3)
