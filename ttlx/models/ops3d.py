"""Numerics of the 3D networks that are a speed choice on CPU: grouped 3D convolutions as one batched dot over
their taps, and 1x1x1 convolutions as dots.

XLA:CPU runs a grouped convolution (PENet's 3x3x3 conv in 32 groups) at a small fraction of its dense
speed, and its gradient worse: on 2 cores, a stage-1 conv of 2 windows (2x12x24x24x128) took 3.1 s
forward and backward, against 1.2 s as taps and a dot, and 0.44 against 0.12 s at stage 2
(``benchmarks/RESULTS.md`` section 15; a sum of broadcast multiply-adds per tap was tried and was 3x slower
in the whole step, its input gradient unfused). Here the 27 taps of each output position are gathered (the
"im2col" patches), and one ``dot_general`` with the groups as its batch dimension sums them. The patches are
27 times the input, so they are not kept for the backward pass: it gathers them again from the input
(a custom VJP). Same sums as the convolution, in another order; elsewhere (accelerators, counting MACs in
``ttlx.models.ops.xla_convolutions``) ``lax.conv_general_dilated`` runs unchanged.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from ttlx.models import ops

NDHWC = ("NDHWC", "DHWIO", "NDHWC")


def patches(x: jax.Array, kernel_size: tuple, strides: tuple, padding: tuple) -> jax.Array:
    """(N*D'*H'*W', taps, C): the input values each output position's kernel taps read."""
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out = [(size - k) // s + 1 for size, k, s in zip(x.shape[1:4], kernel_size, strides, strict=True)]
    taps = []
    for offset in itertools.product(*(range(k) for k in kernel_size)):
        start = (0, *offset, 0)
        limit = (x.shape[0], *(o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, out, strict=True)), x.shape[4])
        taps.append(lax.slice(x, start, limit, (1, *strides, 1)))
    stacked = jnp.stack(taps, axis=-2)  # N, D', H', W', taps, C
    return stacked.reshape(-1, len(taps), x.shape[-1])


def _grouped_dot(p: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    """(groups, M, out per group) from patches (M, taps, C) and a DHWIO kernel of C/groups inputs."""
    m, taps, channels = p.shape
    per_in = channels // groups
    p = p.reshape(m, taps, groups, per_in)
    k = kernel.reshape(taps, per_in, groups, -1)
    return lax.dot_general(p, k, (((1, 3), (0, 1)), ((2,), (2,))))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def grouped_conv3d(x: jax.Array, kernel: jax.Array, strides: tuple, padding: tuple, groups: int) -> jax.Array:
    """A grouped NDHWC/DHWIO convolution (``feature_group_count=groups``, no dilation) as one batched dot."""
    return _grouped_forward(x, kernel, strides, padding, groups)


def _grouped_forward(x, kernel, strides, padding, groups):
    p = patches(x, kernel.shape[:3], strides, padding)
    y = _grouped_dot(p, kernel, groups)  # groups, M, out per group
    n = x.shape[0]
    out = [(size + lo + hi - k) // s + 1 for size, (lo, hi), k, s
           in zip(x.shape[1:4], padding, kernel.shape[:3], strides, strict=True)]
    return jnp.transpose(y, (1, 0, 2)).reshape(n, *out, kernel.shape[-1])


def _grouped_fwd(x, kernel, strides, padding, groups):
    return _grouped_forward(x, kernel, strides, padding, groups), (x, kernel)


def _grouped_bwd(strides, padding, groups, residuals, grad):
    x, kernel = residuals
    p, pull = jax.vjp(lambda x: patches(x, kernel.shape[:3], strides, padding), x)  # gathered again
    m, taps, channels = p.shape
    per_in, per_out = channels // groups, kernel.shape[-1] // groups
    g = grad.reshape(m, groups, per_out)
    k = kernel.reshape(taps, per_in, groups, per_out)
    grad_p = lax.dot_general(g, k, (((2,), (3,)), ((1,), (2,))))  # groups, M, taps, per_in
    grad_p = jnp.transpose(grad_p, (1, 2, 0, 3)).reshape(m, taps, channels)
    grad_k = lax.dot_general(p.reshape(m, taps, groups, per_in), g, (((0,), (0,)), ((2,), (1,))))  # g, t, i, o
    grad_k = jnp.transpose(grad_k, (1, 2, 0, 3)).reshape(kernel.shape)
    return pull(grad_p)[0], grad_k.astype(kernel.dtype)


grouped_conv3d.defvjp(_grouped_fwd, _grouped_bwd)


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
