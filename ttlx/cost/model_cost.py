"""What a (truncated) network costs: parameters, GMACs in two conventions, output shape and latency.

Counting needs no weights: the network is built shape-only and its forward pass traced (see
``macs.py``). Latency is the median wall time of a jit-compiled batch-1 forward pass in eval mode (see
``latency.py``, which also says where it is timed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.cost.latency import latency_ms
from ttlx.cost.macs import count_macs
from ttlx.models.abstract import abstract_model, input_shape


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


def model_cost(cfg: ModelConfig, *, model: nnx.Module | None = None,
               frozen: Sequence[str] | Callable[[str], bool] = (),
               repeats: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Parameters, GMACs (conv+linear and ptflops-style), output shape and latency of ``cfg``'s network.

    Counts use ``model`` when given (e.g. a trained one), else an abstract build with no weights.
    Latency times ``model``, or the same network with zero weights (always so where it is timed in a
    fresh process, see ``latency.py``); ``repeats=0`` skips it (then ``latency_ms`` is None).
    ``frozen`` (prefixes or a predicate on dotted parameter paths, see :func:`count_params`) is left out
    of ``trainable_params``.
    """
    from ttlx.models import get_architecture

    arch = get_architecture(cfg.arch)
    counted = model if model is not None else abstract_model(arch, cfg)
    params, trainable = count_params(counted, frozen)
    macs, out_shape = count_macs(counted, cfg.image_size)
    latency = latency_ms(cfg, model, repeats=repeats, warmup=warmup) if repeats > 0 else None
    return {
        "model": cfg.to_dict(),
        "params": params,
        "trainable_params": trainable,
        "macs": macs.conv_linear,
        "macs_ptflops": macs.ptflops,
        "gmacs": macs.conv_linear / 1e9,
        "gmacs_ptflops": macs.ptflops / 1e9,
        "input_shape": list(input_shape(counted, cfg.image_size)),
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
            ("input", "x".join(str(d) for d in cost["input_shape"])),
            ("output", "x".join(str(d) for d in cost["output_shape"])),
            ("parameters", cost["params"]), ("trainable parameters", cost["trainable_params"]),
            ("GMACs (conv+linear)", cost["gmacs"]), ("GMACs (ptflops-style)", cost["gmacs_ptflops"]),
            (f"latency, ms (median of {cost['latency_repeats']}, {cost['device']})", cost["latency_ms"])]
    return [{"quantity": name, "value": value} for name, value in rows]
