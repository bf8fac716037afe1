"""The network base class: a truncated backbone and one of the heads pool, flatten or none.

``pool`` is global average pooling and a dense layer (``--pooling`` in the reference code); ``flatten`` is
a dense layer over the flattened feature map with kaiming-normal init (the reference code's default);
``None`` returns the NHWC feature map. The dense layer sits under the torchvision name of the
architecture's classifier (``fc`` or ``classifier``) so ImageNet classifiers load by the same walk.
"""

from __future__ import annotations

import jax
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models import layers


class Network(nnx.Module):
    """Subclasses build their kept stages and implement :meth:`units`."""

    def add_head(self, cfg: ModelConfig, classifier_key: str, rngs: nnx.Rngs) -> None:
        self.head_mode = cfg.head
        self.classifier_key = classifier_key
        if cfg.head is None:
            return
        channels, height, width = self.feature_shape(cfg.image_size)
        fan_in = channels if cfg.head == "pool" else channels * height * width
        dense = layers.linear(fan_in, cfg.num_classes, rngs=rngs, kaiming=cfg.head == "flatten",
                              zero_bias=self.zero_classifier_bias, dtype=cfg.dtype)
        setattr(self, classifier_key, dense)

    zero_classifier_bias = False

    def units(self):
        """Yield ``(name, fn)`` pairs that map the input through every kept unit in order."""
        raise NotImplementedError

    def forward_features(self, x: jax.Array) -> jax.Array:
        for _, fn in self.units():
            x = fn(x)
        return x

    def intermediates(self, x: jax.Array) -> dict[str, jax.Array]:
        """The output of the stem and of every kept unit, by name (for SVCCA and Grad-CAM)."""
        out = {}
        for name, fn in self.units():
            x = fn(x)
            out[name] = x
        return out

    def apply_head(self, features: jax.Array) -> jax.Array:
        if self.head_mode is None:
            return features
        if self.head_mode == "pool":
            flat = layers.global_avg_pool(features)
        else:
            # Flatten in torch's (C, H, W) order so a flattened head matches the reference layout.
            flat = features.transpose(0, 3, 1, 2).reshape(features.shape[0], -1)
        return getattr(self, self.classifier_key)(flat)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.apply_head(self.forward_features(x))

    def feature_shape(self, image_size: int) -> tuple[int, int, int]:
        """(channels, height, width) of the feature map for a square input of ``image_size``."""
        graphdef, state = nnx.split(self)

        def features(state, x):  # pure, so tracing never writes abstract values into self
            net = nnx.merge(graphdef, state)
            net.eval()  # no BatchNorm statistic writes: each one makes JAX 0.10 rescan the whole trace
            return net.forward_features(x)

        x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), "float32")
        _, h, w, c = jax.eval_shape(features, state, x).shape
        return c, h, w
