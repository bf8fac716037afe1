"""The building blocks shared by the built-in networks, initialised like torchvision's.

Activations and pools go through these functions so that ``cost.py`` can count the per-element
operations that ptflops counts (BatchNorm x2, ReLU, pooling) next to the conv and dense MACs it reads
from the jaxpr. A plugin network that uses plain Flax layers still gets exact conv+linear counts.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

_ELEMENTWISE: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("ttlx_elementwise", default=None)

conv_init_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")  # ResNet convs
conv_init_fan_in = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")  # DenseNet convs, flatten heads


@contextlib.contextmanager
def count_elementwise() -> Iterator[list[int]]:
    """Collect ptflops-style per-element operation counts while tracing a forward pass."""
    ops: list[int] = []
    token = _ELEMENTWISE.set(ops)
    try:
        yield ops
    finally:
        _ELEMENTWISE.reset(token)


def _record(count: int) -> None:
    ops = _ELEMENTWISE.get()
    if ops is not None:
        ops.append(int(count))


def relu(x: jax.Array) -> jax.Array:
    _record(x.size)
    return jax.nn.relu(x)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torchvision's stem pooling (3x3, stride 2, padding 1), with ``performance.max_pool``'s gradient: a
    loop over taps on CPU, one unrolled expression on accelerators (JAX's own rule writes four int32 index
    arrays and scatters; RESULTS sections 2 and 7.2)."""
    from ttlx.models.ops import max_pool

    _record(x.size)
    return max_pool(x, 3, 2, 1, jax.default_backend() != "cpu")


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    _record(x.size)
    return nnx.avg_pool(x, (2, 2), strides=(2, 2))


def global_avg_pool(x: jax.Array) -> jax.Array:
    _record(x.size)
    return jnp.mean(x, axis=(1, 2))


def conv(cin: int, cout: int, k: int, *, stride: int = 1, pad: int = 0, rngs: nnx.Rngs,
         init=conv_init_fan_out, dtype=jnp.float32) -> nnx.Conv:
    """A bias-free conv with torchvision's explicit symmetric padding (never Flax 'SAME')."""
    from ttlx.models.ops import conv_general_dilated  # 1x1 convs as dots on CPU; unchanged elsewhere

    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                    use_bias=False, kernel_init=init, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
                    conv_general_dilated=conv_general_dilated)


class BatchNorm(nnx.BatchNorm):
    """torch.nn.BatchNorm2d: momentum 0.1 (Flax 0.9), eps 1e-5, weight 1, bias 0.

    The forward pass is written out rather than inherited for two reasons: the running variance is
    updated with the unbiased batch variance as torch does (Flax uses the biased one), and the statistics
    are written with ``set_value`` rather than ``var[...] = ...``, whose sharding probe makes tracing a
    deep network quadratic in its depth under JAX 0.10 (jax-ml/jax#40041).
    """

    def __init__(self, features: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
        super().__init__(features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x, use_running_average: bool | None = None, *, moments=None, **_):
        """``moments``: the (mean, biased variance) of ``x`` over batch and space when the caller already
        has them (DenseNet's blocks keep them per segment); used only in training mode."""
        _record(2 * x.size)
        running = self.use_running_average if use_running_average is None else use_running_average
        if running:
            mean, var = self.mean.get_value(), self.var.get_value()
        else:
            mean, var = batch_moments(x) if moments is None else moments
            count = x.size // x.shape[-1]
            unbiased = var * (count / max(count - 1, 1))
            momentum = self.momentum
            self.mean.set_value(jax.lax.stop_gradient(momentum * self.mean.get_value() + (1 - momentum) * mean))
            self.var.set_value(jax.lax.stop_gradient(momentum * self.var.get_value() + (1 - momentum) * unbiased))
        scale = self.scale.get_value() * jax.lax.rsqrt(var + self.epsilon)
        shift = self.bias.get_value() - mean * scale
        dtype = self.dtype or x.dtype
        return x.astype(dtype) * scale.astype(dtype) + shift.astype(dtype)


def batch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance over batch and space, computed in float32 (also for bfloat16 inputs).

    On CPU in two passes, the mean and then E[(x - mean)^2], as torch computes them. On accelerators in one,
    E[x^2] - E[x]^2 (clamped at 0; what Flax's BatchNorm does by default): two sums over one read of the
    activations, where a train step is bound by memory traffic (RESULTS section 6.1). It took a ResNet50
    step on an H100 from 31.9 to 30.2 ms (FTL) and from 25.7 to 23.4 ms (TTL-2) at batch 128 in bfloat16
    (RESULTS section 7.2). The two agree to float32 rounding unless a channel's mean is many times its spread.
    """
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))  # batch and space: (0, 1, 2) for NHWC, (0, 1, 2, 3) for NDHWC volumes
    mean = jnp.mean(xf, axis=axes)
    if jax.default_backend() == "cpu":
        return mean, jnp.mean(jnp.square(xf - mean), axis=axes)
    return mean, jnp.maximum(jnp.mean(jnp.square(xf), axis=axes) - jnp.square(mean), 0.0)


def torch_linear_init(fan_in: int):
    """torch.nn.Linear's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def linear(cin: int, cout: int, *, rngs: nnx.Rngs, kaiming: bool = False, zero_bias: bool = False,
           dtype=jnp.float32) -> nnx.Linear:
    kernel_init = conv_init_fan_in if kaiming else torch_linear_init(cin)
    bias_init = nnx.initializers.zeros if zero_bias else torch_linear_init(cin)
    return nnx.Linear(cin, cout, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                      param_dtype=jnp.float32, rngs=rngs)
