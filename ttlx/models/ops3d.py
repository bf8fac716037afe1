"""Numerics of the 3D networks that are a speed choice on CPU: grouped 3D convolutions as sums over their
taps, and 1x1x1 convolutions as dots.

XLA:CPU runs a grouped convolution (PENet's 3x3x3 conv in 32 groups) at a small fraction of its dense
speed, and its gradient worse: on 2 cores, a stage-1 conv of 2 windows (2x12x24x24x128) took 3.1 s forward
and backward; gathered into im2col patches and one dot batched over the groups, 1.2 s; as a sum over taps
of broadcast multiply-adds, 0.17 s for the kernel's gradient against the patches' 1.16 s
(``benchmarks/RESULTS.md`` section 14). Same sums as the convolution, in another order; elsewhere
(accelerators, counting MACs in ``ttlx.models.ops.xla_convolutions``) ``lax.conv_general_dilated`` runs
unchanged.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from ttlx.models import ops

NDHWC = ("NDHWC", "DHWIO", "NDHWC")


ELEMENTWISE_GROUP = 8  # groups of at most this many input channels: multiply-adds; wider: a dot per tap


def grouped_conv3d(x: jax.Array, kernel: jax.Array, strides: tuple, padding: tuple, groups: int) -> jax.Array:
    """A grouped NDHWC/DHWIO convolution (``feature_group_count=groups``, no dilation) as a sum over its
    taps: each tap's strided view of the input times that tap's kernel, per group. Narrow groups (PENet's 4 and
    8 channels in stages 1-2) as broadcast multiply-adds that XLA fuses into one loop, wider ones as one
    batched dot per tap; autodiff gives the same form for the gradients."""
    n, channels = x.shape[0], x.shape[-1]
    per_in, per_out = channels // groups, kernel.shape[-1] // groups
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out = [(size - k) // s + 1 for size, k, s in zip(x.shape[1:4], kernel.shape[:3], strides, strict=True)]
    x = x.reshape(*x.shape[:4], groups, per_in)
    k = kernel.reshape(-1, per_in, groups, per_out)  # taps, in, group, out
    total = None
    for tap, offset in enumerate(itertools.product(*(range(size) for size in kernel.shape[:3]))):
        limit = (n, *(o + s * (m - 1) + 1 for o, s, m in zip(offset, strides, out, strict=True)), groups, per_in)
        view = lax.slice(x, (0, *offset, 0, 0), limit, (1, *strides, 1, 1))  # N, D', H', W', group, in
        if per_in <= ELEMENTWISE_GROUP:
            terms = [view[..., i: i + 1] * k[tap, i].astype(view.dtype) for i in range(per_in)]
            term = functools.reduce(jnp.add, terms)
        else:
            term = jnp.einsum("ndhwgi,igo->ndhwgo", view, k[tap].astype(view.dtype))
        total = term if total is None else total + term
    return total.reshape(n, *out, groups * per_out)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated`` for ``nnx.Conv`` in 3D: on CPU, grouped convolutions as a batched dot
    and 1x1x1 ones as dots; anything else (and everything inside ``ops.xla_convolutions``) unchanged."""
    plain = (lhs.ndim == 5 and not precision and not any(kwargs.values()) and not isinstance(padding, str)
             and all(d == 1 for d in (lhs_dilation or ())) and all(d == 1 for d in (rhs_dilation or ()))
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NDHWC))
    if plain and ops._POINTWISE_AS_DOT.get() and jax.default_backend() == "cpu":
        strides, pads = tuple(window_strides), tuple(tuple(p) for p in padding)
        if feature_group_count > 1:
            return grouped_conv3d(lhs, rhs, strides, pads, feature_group_count)
        if rhs.shape[:3] == (1, 1, 1) and all(p == (0, 0) for p in pads):
            x = lhs[:, :: strides[0], :: strides[1], :: strides[2], :] if strides != (1, 1, 1) else lhs
            n, d, h, w, c = x.shape
            return ops.pointwise_conv(x.reshape(n, d * h, w, c), rhs[0, 0, 0]).reshape(n, d, h, w, -1)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)
