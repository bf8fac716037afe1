"""The 3D networks' CPU formulations (``ttlx.models.ops3d``) against XLA's own convolutions, values and
gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from ttlx.models import ops3d
from ttlx.models.ops import xla_convolutions

NDHWC = ("NDHWC", "DHWIO", "NDHWC")


def reference(x, k, strides, padding, groups):
    return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=NDHWC, feature_group_count=groups)


def relative(a, b) -> float:
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


@pytest.mark.slow  # 10-60 s of compiles on 2 shared cores; the parity tests run these paths too
@pytest.mark.parametrize(("shape", "kernel", "strides", "padding", "groups"), [
    ((2, 4, 6, 6, 8), (3, 3, 3), (1, 1, 1), ((1, 1),) * 3, 4),   # PENet's 3x3x3 grouped conv
    ((1, 5, 7, 6, 8), (3, 3, 3), (2, 2, 2), ((1, 1),) * 3, 2),   # its strided first block, odd sizes
    ((1, 3, 4, 5, 32), (3, 3, 3), (1, 2, 1), ((1, 1),) * 3, 2),  # wide groups: a dot per tap
    ((2, 4, 6, 6, 8), (1, 1, 1), (1, 1, 1), ((0, 0),) * 3, 1),   # 1x1x1
    ((2, 5, 6, 7, 8), (1, 1, 1), (2, 2, 2), ((0, 0),) * 3, 1),   # the strided skip path
])
def test_cpu_formulations_equal_xlas_convolution_and_its_gradients(shape, kernel, strides, padding, groups):
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (*kernel, shape[-1] // groups, 12))
    ours = lambda x, k: ops3d.conv_general_dilated(x, k, strides, padding,  # noqa: E731
                                                   dimension_numbers=NDHWC, feature_group_count=groups)
    theirs = lambda x, k: reference(x, k, strides, padding, groups)  # noqa: E731
    assert relative(jax.jit(ours)(x, k), theirs(x, k)) < 1e-5
    cotangent = jax.random.normal(jax.random.key(2), theirs(x, k).shape)
    grads = [jax.jit(jax.vjp(f, x, k)[1])(cotangent) for f in (ours, theirs)]
    for mine, xlas in zip(*grads, strict=True):
        assert relative(mine, xlas) < 1e-5


def test_counting_macs_sees_xlas_grouped_convolution():
    x = jnp.ones((1, 4, 6, 6, 8))
    k = jnp.ones((3, 3, 3, 2, 8))
    with xla_convolutions():
        closed = jax.make_jaxpr(lambda x, k: ops3d.conv_general_dilated(
            x, k, (1, 1, 1), ((1, 1),) * 3, dimension_numbers=NDHWC, feature_group_count=4))(x, k)
    assert [e.primitive.name for e in closed.jaxpr.eqns] == ["conv_general_dilated"]
