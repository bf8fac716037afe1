"""The building blocks of the 3D networks (``penet``, ``r3d_18``): NDHWC volumes, windows of slices.

A volume batch is ``(batch, depth, height, width, channels)``. CT windows come with one channel; both
networks were trained on 3-channel video, and the reference code repeats the channel three times. A stem
here folds that repetition into its kernel instead (the kernel summed over its input channels), which is
the same sum and a third of the stem's work; a 3-channel input takes the kernel as it is.

Element-wise operations record their ptflops-style counts through ``ttlx.models.layers`` as the 2D ones do.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from ttlx.config import ModelConfig
from ttlx.models import layers
from ttlx.models.heads import Network

DEFAULT_WINDOW = 24  # slices per window when a config names none (PENet's 24)
VOLUME_CHANNELS = 1  # a CT window's channels
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default
NDHWC = ("NDHWC", "DHWIO", "NDHWC")


def triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value, value)


def conv3d(cin: int, cout: int, kernel, *, stride=1, pad=0, groups: int = 1, rngs: nnx.Rngs,
           init=layers.conv_init_fan_out, dtype=jnp.float32) -> nnx.Conv:
    """A bias-free 3D conv with torch's explicit symmetric padding; ``groups`` as torch's ``groups``."""
    from ttlx.models.ops3d import conv_general_dilated  # grouped and 1x1x1 convs as dots on CPU

    pads = triple(pad)
    return nnx.Conv(cin, cout, triple(kernel), strides=triple(stride), padding=tuple((p, p) for p in pads),
                    feature_group_count=groups, use_bias=False, kernel_init=init, dtype=dtype,
                    param_dtype=jnp.float32, rngs=rngs, conv_general_dilated=conv_general_dilated)


def stem_conv(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """``conv`` applied to ``x``; a 1-channel ``x`` meets the kernel summed over its input channels, which
    equals the conv of ``x`` repeated to the kernel's channels (the reference code's expansion)."""
    kernel = conv.kernel.get_value()
    if x.shape[-1] == 1 and kernel.shape[-2] > 1:
        kernel = jnp.sum(kernel, axis=-2, keepdims=True)
    dtype = conv.dtype or x.dtype
    return lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), conv.strides, conv.padding,
                                    dimension_numbers=NDHWC)


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm (eps 1e-5, affine): statistics per sample and group in float32, two passes."""

    def __init__(self, features: int, groups: int, *, zero_scale: bool = False, epsilon: float = 1e-5,
                 dtype=jnp.float32):
        self.groups = groups
        self.epsilon = epsilon
        self.dtype = dtype
        self.scale = nnx.Param(jnp.zeros((features,)) if zero_scale else jnp.ones((features,)))
        self.bias = nnx.Param(jnp.zeros((features,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        layers._record(2 * x.size)
        n, channels = x.shape[0], x.shape[-1]
        grouped = x.astype(jnp.float32).reshape(n, -1, self.groups, channels // self.groups)
        mean = jnp.mean(grouped, axis=(1, 3))
        var = jnp.mean(jnp.square(grouped - mean[:, None, :, None]), axis=(1, 3))
        inv = jnp.repeat(lax.rsqrt(var + self.epsilon), channels // self.groups, axis=1)  # (n, channels)
        scale = self.scale.get_value() * inv
        shift = self.bias.get_value() - jnp.repeat(mean, channels // self.groups, axis=1) * scale
        shape = (n,) + (1,) * (x.ndim - 2) + (channels,)
        dtype = self.dtype or x.dtype
        return x.astype(dtype) * scale.reshape(shape).astype(dtype) + shift.reshape(shape).astype(dtype)


def group_norm(features: int, *, zero_scale: bool = False, dtype=jnp.float32) -> GroupNorm:
    """PENet's GroupNorm: one group per 16 channels."""
    return GroupNorm(features, features // 16, zero_scale=zero_scale, dtype=dtype)


def leaky_relu(x: jax.Array) -> jax.Array:
    layers._record(x.size)
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


def max_pool3d(x: jax.Array, window: int = 3, stride: int = 2, pad: int = 1) -> jax.Array:
    """torch.nn.MaxPool3d (padding with -inf) over depth, height and width."""
    layers._record(x.size)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, window, 1), (1, stride, stride, stride, 1),
                             ((0, 0), (pad, pad), (pad, pad), (pad, pad), (0, 0)))


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over every axis between batch and channels: (N, D, H, W, C) -> (N, C)."""
    layers._record(x.size)
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


class Network3D(Network):
    """A network over NDHWC windows: ``window`` slices of ``image_size`` x ``image_size`` pixels.

    The heads are the 2D ones over one more axis: ``pool`` averages depth, height and width; ``flatten``
    flattens in torch's (C, D, H, W) order.
    """

    def set_input(self, cfg: ModelConfig) -> None:
        self.window = cfg.window or DEFAULT_WINDOW

    def input_shape(self, image_size: int, batch: int = 1) -> tuple[int, ...]:
        return (batch, self.window, image_size, image_size, VOLUME_CHANNELS)

    def add_head(self, cfg: ModelConfig, classifier_key: str, rngs: nnx.Rngs) -> None:
        self.head_mode = cfg.head
        self.classifier_key = classifier_key
        if cfg.head is None:
            return
        shape = self.feature_shape(cfg.image_size)
        fan_in = shape[0] if cfg.head == "pool" else math.prod(shape)
        dense = layers.linear(fan_in, cfg.num_classes, rngs=rngs, kaiming=cfg.head == "flatten",
                              zero_bias=self.zero_classifier_bias, dtype=cfg.dtype)
        setattr(self, classifier_key, dense)

    def apply_head(self, features: jax.Array) -> jax.Array:
        if self.head_mode is None:
            return features
        if self.head_mode == "pool":
            flat = global_avg_pool(features)
        else:
            flat = jnp.moveaxis(features, -1, 1).reshape(features.shape[0], -1)
        return getattr(self, self.classifier_key)(flat)

    def feature_shape(self, image_size: int) -> tuple[int, ...]:
        """(channels, depth, height, width) of the feature map of one window."""
        graphdef, state = nnx.split(self)

        def features(state, x):
            net = nnx.merge(graphdef, state)
            net.eval()
            return net.forward_features(x)

        x = jax.ShapeDtypeStruct(self.input_shape(image_size), "float32")
        _, d, h, w, c = jax.eval_shape(features, state, x).shape
        return c, d, h, w


def kept_per_stage(units: int, depths: tuple[int, ...]) -> list[int]:
    """How many units of each stage the first ``units`` cover, e.g. 11 of (3, 4, 6, 3) -> [3, 4, 4]."""
    kept, left = [], units
    for depth in depths:
        if left <= 0:
            break
        kept.append(min(depth, left))
        left -= depth
    return kept


def units_kept(cfg: ModelConfig, depths: tuple[int, ...]) -> int:
    """Units a config keeps: layer-wise its point, block-wise the units of its first ``trunc`` stages."""
    if cfg.layerwise:
        return cfg.trunc
    return sum(depths[: len(depths) if cfg.trunc == -1 else cfg.trunc])
