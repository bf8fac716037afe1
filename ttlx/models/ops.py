"""Numerics of the networks that are a speed choice: 1x1 convolutions as dots on CPU, the accelerators'
space-to-depth stem, and max pooling with a gradient that needs no index arrays.

None of these change what is computed, only the order of float rounding (the accelerators' one-pass
BatchNorm statistics, ``ttlx.models.layers.batch_moments``, the most). ``conv_general_dilated`` is a drop-in
for the function ``nnx.Conv`` calls. Measurements behind each choice are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from jax import lax

# --- 1x1 convolutions as dots ------------------------------------------------------------------------


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 1x1, stride-1, unpadded convolution of NHWC ``x`` with a [C, D] ``kernel``, as one dot."""
    return lax.dot_general(x, kernel, (((3,), (0,)), ((), ())))


def _pointwise_fwd(x, kernel):
    return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_bwd(residuals, grad):
    # Both gradients as plain row-major dots over the (N*H*W) rows. Left to autodiff of a convolution,
    # XLA:CPU transposes activations to [C, H, W, N] for the kernel gradient (and re-computes the
    # preceding BatchNorm inside that transpose), which cost a third of a ResNet50 training step.
    x, kernel = residuals
    rows_x = x.reshape(-1, x.shape[-1])
    rows_grad = grad.reshape(-1, grad.shape[-1])
    grad_x = lax.dot_general(rows_grad, kernel, (((1,), (1,)), ((), ()))).reshape(x.shape)
    grad_kernel = lax.dot_general(rows_x, rows_grad, (((0,), (0,)), ((), ())))
    return grad_x, grad_kernel.astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_fwd, _pointwise_bwd)


def _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                   extra: dict) -> bool:
    """An NHWC/HWIO convolution with no dilation, groups or extra options."""
    if lhs.ndim != 4 or feature_group_count != 1 or any(extra.values()):
        return False
    if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
        return False
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def _is_plain_pointwise(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count, extra: dict) -> bool:
    """A 1x1 NHWC/HWIO convolution with no padding, dilation, groups or extra options."""
    if rhs.shape[:2] != (1, 1) or isinstance(padding, str) or any(tuple(p) != (0, 0) for p in padding):
        return False
    return _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)


def _is_stem(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
             feature_group_count, extra: dict) -> bool:
    """torchvision's stem convolution: 7x7, stride 2, padding 3, at most 4 input channels, even height and
    width, NHWC/HWIO."""
    if lhs.ndim != 4 or rhs.shape[:2] != (7, 7) or rhs.shape[2] > 4 or tuple(window_strides) != (2, 2):
        return False
    if isinstance(padding, str) or [tuple(p) for p in padding] != [(3, 3), (3, 3)]:
        return False
    if lhs.shape[1] % 2 or lhs.shape[2] % 2:
        return False
    return _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)


def space_to_depth_stem(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 7x7, stride-2, padding-3 convolution of NHWC ``x`` (even height and width) with an HWIO ``kernel``,
    computed as a 4x4 stride-1 convolution over 2x2 pixel blocks stacked into channels (the kernel
    zero-padded to 8x8 and stacked the same way): the same sums plus zero taps.

    For tensor cores XLA pads a bfloat16 convolution's input channels to a multiple of 8, so the stem's 3
    channels cost as 8; as 12 they cost 16 for a quarter of the positions. With the one-pass BatchNorm
    statistics and the unrolled pooling gradient it took a ResNet50 train step on an H100 from 31.9 to 27.0 ms
    (FTL) and from 25.7 to 22.3 ms (TTL-2) at batch 128 in bfloat16 (RESULTS section 7.2)."""
    n, height, width, channels = x.shape
    padded = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    rows, cols = (height + 6) // 2, (width + 6) // 2
    blocks = padded.reshape(n, rows, 2, cols, 2, channels).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(n, rows, cols, 4 * channels)
    taps = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    taps = taps.reshape(4, 2, 4, 2, channels, -1).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4, 4 * channels, -1)
    return lax.conv_general_dilated(blocks, taps, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


_POINTWISE_AS_DOT = contextvars.ContextVar("ttlx_pointwise_as_dot", default=True)


@contextlib.contextmanager
def xla_convolutions():
    """Trace every convolution as the ``lax.conv_general_dilated`` it stands for, with neither the CPU's dots
    nor the accelerators' space-to-depth stem (for tools that read the jaxpr, e.g. MACs)."""
    token = _POINTWISE_AS_DOT.set(False)
    try:
        yield
    finally:
        _POINTWISE_AS_DOT.reset(token)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated`` (the signature ``nnx.Conv`` calls), with 1x1 convs as dots on CPU and
    the 7x7 stride-2 stem as :func:`space_to_depth_stem` on accelerators.

    Same sums, same result up to float rounding order; other convolutions go to
    ``lax.conv_general_dilated`` unchanged.
    """
    extra = {"precision": precision, **kwargs}
    if _POINTWISE_AS_DOT.get():
        arguments = (lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)
        on_cpu = jax.default_backend() == "cpu"
        if on_cpu and _is_plain_pointwise(lhs, rhs, padding, *arguments):
            strides = tuple(window_strides)
            if strides != (1, 1):
                lhs = lhs[:, :: strides[0], :: strides[1], :]
            return pointwise_conv(lhs, rhs[0, 0])
        if not on_cpu and _is_stem(lhs, rhs, window_strides, padding, *arguments):
            return space_to_depth_stem(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)


# --- max pooling with a gradient that needs no index arrays ---------------------------------------------


def _pool_padding(pad: int) -> tuple:
    return ((0, 0), (pad, pad), (pad, pad), (0, 0))


def _max_pool_forward(x: jax.Array, window: int, stride: int, pad: int) -> jax.Array:
    init = jnp.array(-jnp.inf, x.dtype)
    return lax.reduce_window(x, init, lax.max, (1, window, window, 1), (1, stride, stride, 1), _pool_padding(pad))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def max_pool(x: jax.Array, window: int, stride: int, pad: int, unroll: bool = False) -> jax.Array:
    """Max pooling of NHWC ``x`` (square window, -inf padding), as torch's ``MaxPool2d``.

    Same forward values as ``nnx.max_pool``. The gradient goes to the first maximum of each window in
    row-major order (torch's choice). JAX's generic rule for ``reduce_window`` max materialises four int32
    index arrays of the padded input's size and reduces over (value, index) pairs: on XLA:CPU about
    190 ms of a ResNet50 step at batch 16 (this: 48 ms, forward included; torch 147 ms).

    ``unroll``: sum the taps' gradients in one unrolled expression (one fused pass over the input on a
    GPU) instead of a loop over taps (what XLA:CPU needs; see ``_max_pool_bwd``).
    """
    return _max_pool_forward(x, window, stride, pad)


def _max_pool_fwd(x, window, stride, pad, unroll):
    y = _max_pool_forward(x, window, stride, pad)
    return y, (x, y)


def _max_pool_bwd(window, stride, pad, unroll, residuals, grad):
    x, y = residuals
    n, _, _, c = x.shape
    padded = jnp.pad(x, _pool_padding(pad), constant_values=-jnp.inf)
    height, width = padded.shape[1:3]
    rows, cols = y.shape[1:3]
    # which tap (row-major offset in the window) is each window's first maximum
    taken = jnp.zeros(y.shape, bool)
    first = jnp.zeros(y.shape, jnp.int8)
    for tap in range(window * window):
        di, dj = divmod(tap, window)
        view = lax.slice(padded, (0, di, dj, 0), (n, di + stride * (rows - 1) + 1, dj + stride * (cols - 1) + 1, c),
                         (1, stride, stride, 1))
        hit = (view == y) & ~taken
        taken = taken | hit
        first = jnp.where(hit, jnp.int8(tap), first)
    zero = jnp.zeros((), grad.dtype)
    spread_pad = ((0, 0, 0), (0, height - stride * (rows - 1) - 1, stride - 1),
                  (0, width - stride * (cols - 1) - 1, stride - 1), (0, 0, 0))
    margin = ((0, 0), (window - 1, 0), (window - 1, 0), (0, 0))

    def add_tap(tap, total):
        # the gradient of the windows whose maximum is this tap, spread to the windows' corners (stride
        # apart) and shifted by the tap's offset. A loop rather than nine unrolled taps: XLA:CPU would
        # otherwise fuse whatever produced ``grad`` into every tap and compute it up to nine times
        # (in DenseNet201 the sum over dense block 1's layers: 390 ms).
        di, dj = tap // window, tap % window
        spread = jnp.pad(lax.pad(jnp.where(first == tap, grad, zero), zero, spread_pad), margin)
        return total + lax.dynamic_slice(spread, (0, window - 1 - di, window - 1 - dj, 0), padded.shape)

    total = jnp.zeros(padded.shape, grad.dtype)
    if unroll:
        for tap in range(window * window):
            total = add_tap(tap, total)
    else:
        total = lax.fori_loop(0, window * window, add_tap, total)
    return (total[:, pad: height - pad, pad: width - pad, :],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
