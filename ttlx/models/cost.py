"""What a (truncated) network costs: parameters, GMACs in two conventions, output shape and latency.

Counting needs no weights: the network is built shape-only and its forward pass traced (see
``macs.py``). Latency is the median wall time of a jit-compiled batch-1 forward pass in eval mode.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models.macs import count_macs


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


def _dotted(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in path)


def count_params(model: nnx.Module, frozen: Sequence[str] | Callable[[str], bool] = ()) -> tuple[int, int]:
    """(all parameters, trainable parameters) of ``model``.

    ``frozen``: dotted parameter-path prefixes (``conv1``, ``layer1``, ``features.denseblock1``) or a
    predicate on dotted paths (``layer1.0.conv1.kernel``) saying which parameters are frozen. BatchNorm
    running statistics are not parameters (as in torch's ``parameters()``).
    """
    is_frozen = frozen if callable(frozen) else _under(tuple(frozen))
    total = trainable = 0
    for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        size = math.prod(value.shape)
        total += size
        trainable += 0 if is_frozen(_dotted(path)) else size
    return total, trainable


def _under(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda name: any(name == p or name.startswith(p + ".") for p in prefixes)


def measure_latency(model: nnx.Module, image_size: int, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in ms of a jit-compiled batch-1 eval-mode forward pass, after ``warmup`` runs."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        net = nnx.merge(graphdef, state)  # a copy: the caller's model keeps its train/eval mode
        net.eval()
        return net(x)

    x = jax.random.normal(jax.random.key(0), (1, image_size, image_size, 3), jnp.float32)
    for _ in range(max(warmup, 1)):  # the first call compiles
        forward(state, x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(state, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def model_cost(cfg: ModelConfig, *, model: nnx.Module | None = None,
               frozen: Sequence[str] | Callable[[str], bool] = (),
               repeats: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Parameters, GMACs (conv+linear and ptflops-style), output shape and latency of ``cfg``'s network.

    Counts use ``model`` when given (e.g. a trained one), else an abstract build with no weights.
    Latency runs ``model`` or the same network with zero weights; ``repeats=0`` skips it (then
    ``latency_ms`` is None).
    ``frozen`` (prefixes or a predicate on dotted parameter paths, see :func:`count_params`) is left out
    of ``trainable_params``.
    """
    from ttlx.models import get_architecture

    arch = get_architecture(cfg.arch)
    counted = model if model is not None else abstract_model(arch, cfg)
    params, trainable = count_params(counted, frozen)
    macs, out_shape = count_macs(counted, cfg.image_size)
    latency = None
    if repeats > 0:
        timed = model if model is not None else zero_weight_model(counted)
        latency = measure_latency(timed, cfg.image_size, repeats=repeats, warmup=warmup)
    return {
        "model": cfg.to_dict(),
        "params": params,
        "trainable_params": trainable,
        "macs": macs.conv_linear,
        "macs_ptflops": macs.ptflops,
        "gmacs": macs.conv_linear / 1e9,
        "gmacs_ptflops": macs.ptflops / 1e9,
        "output_shape": list(out_shape),
        "latency_ms": latency,
        "latency_repeats": repeats,
        "device": str(jax.devices()[0].device_kind),
    }


def summary_rows(cost: dict[str, Any]) -> list[dict[str, Any]]:
    """``model_cost``'s result as (quantity, value) rows for a table."""
    cfg = cost["model"]
    cut = f"{cfg['trunc']} ({'layer-wise' if cfg['layerwise'] else 'block-wise'})"
    head = "none (feature map)" if cfg["head"] is None else f"{cfg['head']}, {cfg['num_classes']} classes"
    rows = [("architecture", cfg["arch"]), ("truncation", cut), ("head", head),
            ("input", f"1x{cfg['image_size']}x{cfg['image_size']}x3"),
            ("output", "x".join(str(d) for d in cost["output_shape"])),
            ("parameters", cost["params"]), ("trainable parameters", cost["trainable_params"]),
            ("GMACs (conv+linear)", cost["gmacs"]), ("GMACs (ptflops-style)", cost["gmacs_ptflops"]),
            (f"latency, ms (median of {cost['latency_repeats']}, {cost['device']})", cost["latency_ms"])]
    return [{"quantity": name, "value": value} for name, value in rows]
