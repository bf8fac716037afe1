"""DenseNet121 and DenseNet201 as torchvision builds them, cut after any dense block or any dense layer.

Both have growth 32 and differ only in their dense layers per block: (6, 12, 24, 16) and (6, 12, 48, 32).
Block-wise point t keeps the stem and denseblock_i + transition_i for i <= t; -1 keeps all features
including norm5 (and the ReLU torchvision applies before its classifier). Layer-wise point n keeps the
stem and the first n dense layers (58 or 98), with the transitions between kept blocks; n = all equals -1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models import layers
from ttlx.models.architecture import Architecture, HubWeights
from ttlx.models.heads import Network
from ttlx.models.weights.sources import CHEST_XRAY_SOURCES

BLOCK_LAYERS = (6, 12, 48, 32)  # DenseNet201
BLOCK_LAYERS_121 = (6, 12, 24, 16)
GROWTH = 32
BN_SIZE = 4
INIT_FEATURES = 64


class DenseLayer(nnx.Module):
    def __init__(self, cin: int, growth: int, *, dtype, rngs: nnx.Rngs):
        width = BN_SIZE * growth
        self.norm1 = layers.BatchNorm(cin, rngs=rngs, dtype=dtype)
        self.conv1 = layers.conv(cin, width, 1, rngs=rngs, init=layers.conv_init_fan_in, dtype=dtype)
        self.norm2 = layers.BatchNorm(width, rngs=rngs, dtype=dtype)
        self.conv2 = layers.conv(width, growth, 3, pad=1, rngs=rngs, init=layers.conv_init_fan_in, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([x, self.new_features(x)], axis=-1)

    def new_features(self, x: jax.Array, moments=None) -> jax.Array:
        """The ``growth`` channels this layer appends to ``x`` (``moments``: see ``BatchNorm``)."""
        y = self.conv1(layers.relu(self.norm1(x, moments=moments)))
        return self.conv2(layers.relu(self.norm2(y)))


class Transition(nnx.Module):
    def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
        self.norm = layers.BatchNorm(cin, rngs=rngs, dtype=dtype)
        self.conv = layers.conv(cin, cout, 1, rngs=rngs, init=layers.conv_init_fan_in, dtype=dtype)

    def __call__(self, x: jax.Array, moments=None) -> jax.Array:
        return layers.avg_pool_2x2(self.conv(layers.relu(self.norm(x, moments=moments))))


class DenseBlock(nnx.Module):
    """Holds ``denselayer1..N`` under torchvision's names."""

    def __init__(self, cin: int, count: int, growth: int, *, dtype, rngs: nnx.Rngs):
        for i in range(count):
            setattr(self, f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, dtype=dtype, rngs=rngs))
        self.count = count

    def layer_list(self) -> list[DenseLayer]:
        return [getattr(self, f"denselayer{i + 1}") for i in range(self.count)]

    def __call__(self, x: jax.Array) -> tuple[jax.Array, Segments]:
        """The block's output and its segments (same values as applying the layers one by one)."""
        segments = Segments(x)
        for layer in self.layer_list():
            needs = not layer.norm1.use_running_average
            segments.append(layer.new_features(segments.concatenated(), segments.moments() if needs else None))
        return segments.concatenated(), segments


class Segments:
    """A dense block's growing input kept as its parts, with each part's batch moments computed once.

    BatchNorm statistics are per channel, so the training-mode mean and variance of a concatenation
    are the concatenation of its parts' statistics; a part's channels never change within a forward
    pass. Each dense layer's norm1 then reads cached statistics instead of reducing over its whole
    (growing) input again (torch does reduce again); gradients reach the parts through the cached
    statistics, and the running statistics are updated exactly as before.
    """

    def __init__(self, x: jax.Array):
        self.parts = [x]
        self.stats: list[tuple[jax.Array, jax.Array] | None] = [None]
        self.whole = x

    def append(self, y: jax.Array) -> None:
        self.parts.append(y)
        self.stats.append(None)
        # one two-operand concatenation per layer, as torchvision's layers do: joining all parts anew
        # in each layer was much slower on XLA:CPU (benchmarks/RESULTS.md, "DenseNet201 on CPU")
        self.whole = jnp.concatenate([self.whole, y], axis=-1)

    def concatenated(self) -> jax.Array:
        return self.whole

    def moments(self) -> tuple[jax.Array, jax.Array]:
        for i, part in enumerate(self.parts):
            if self.stats[i] is None:
                self.stats[i] = layers.batch_moments(part)
        if len(self.stats) == 1:
            return self.stats[0]
        return tuple(jnp.concatenate([s[k] for s in self.stats]) for k in (0, 1))


def plan(cfg: ModelConfig, block_layers: tuple[int, ...] = BLOCK_LAYERS) -> tuple[list[int], int, bool]:
    """(dense layers kept per block, transitions kept, whether norm5 is kept) for a config."""
    if cfg.layerwise:
        kept, left = [], cfg.trunc
        for depth in block_layers:
            if left <= 0:
                break
            kept.append(min(depth, left))
            left -= depth
        # a transition is kept only when the next block has at least one kept layer
        transitions = max(0, len(kept) - 1)
        return kept, transitions, cfg.trunc == sum(block_layers)
    if cfg.trunc == -1:
        return list(block_layers), len(block_layers) - 1, True
    return list(block_layers[: cfg.trunc]), cfg.trunc, False


class Features(nnx.Module):
    """torchvision's ``features`` Sequential: conv0, norm0, pool0, denseblocks, transitions, norm5."""

    def __init__(self, cfg: ModelConfig, block_layers: tuple[int, ...], *, rngs: nnx.Rngs):
        dtype = cfg.dtype
        self.conv0 = layers.conv(cfg.in_channels, INIT_FEATURES, 7, stride=2, pad=3, rngs=rngs,
                                 init=layers.conv_init_fan_in, dtype=dtype)
        self.norm0 = layers.BatchNorm(INIT_FEATURES, rngs=rngs, dtype=dtype)
        kept, transitions, final_norm = plan(cfg, block_layers)
        channels = INIT_FEATURES
        order = []
        for index, count in enumerate(kept):
            block = index + 1
            slim = cfg.slim_factor if cfg.slim_from is not None and index >= cfg.slim_from else 1
            growth = GROWTH // slim
            setattr(self, f"denseblock{block}", DenseBlock(channels, count, growth, dtype=dtype, rngs=rngs))
            order.append(f"denseblock{block}")
            channels += count * growth
            if block <= transitions:
                setattr(self, f"transition{block}", Transition(channels, channels // 2, dtype=dtype, rngs=rngs))
                order.append(f"transition{block}")
                channels //= 2
        self.norm5 = layers.BatchNorm(channels, rngs=rngs, dtype=dtype) if final_norm else None
        self.order = tuple(order)


class DenseNet(Network):
    zero_classifier_bias = True  # torchvision zeroes the classifier bias of DenseNet

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, block_layers: tuple[int, ...] = BLOCK_LAYERS):
        self.features = Features(cfg, block_layers, rngs=rngs)
        self.add_head(cfg, DENSENET201.classifier_key, rngs)

    def stem(self, x: jax.Array) -> jax.Array:
        f = self.features
        return layers.max_pool_3x3_s2(layers.relu(f.norm0(f.conv0(x))))

    def final(self, x: jax.Array, moments=None) -> jax.Array:
        return layers.relu(self.features.norm5(x, moments=moments))

    def forward_features(self, x: jax.Array) -> jax.Array:
        """Same values as applying ``units()`` in turn, with each dense block run as a whole."""
        x = self.stem(x)
        segments = None
        for name in self.features.order:
            part = getattr(self.features, name)
            if isinstance(part, DenseBlock):
                x, segments = part(x)
            else:
                x = part(x, self._moments(part.norm, segments))
                segments = None
        if self.features.norm5 is not None:
            x = self.final(x, self._moments(self.features.norm5, segments))
        return x

    @staticmethod
    def _moments(norm: layers.BatchNorm, segments: Segments | None):
        return segments.moments() if segments is not None and not norm.use_running_average else None

    def units(self):
        yield "stem", self.stem
        for name in self.features.order:
            part = getattr(self.features, name)
            if isinstance(part, DenseBlock):
                for i, layer in enumerate(part.layer_list()):
                    yield f"{name}.denselayer{i + 1}", layer
            else:
                yield name, part
        if self.features.norm5 is not None:
            yield "norm5", self.final


class DenseNetArchitecture(Architecture):
    def build(self, cfg: ModelConfig, rngs: nnx.Rngs) -> DenseNet:
        return DenseNet(cfg, rngs=rngs, block_layers=self.stage_units)


DENSENET201 = DenseNetArchitecture(
    name="densenet201",
    aliases=("DenseNet201", "densenet-201"),
    num_units=sum(BLOCK_LAYERS),
    unit_name="dense layer",
    classifier_key="classifier",
    slim_stages=(0, 1, 2, 3),
    max_slim_factor=32,  # the growth rate of 32
    stage_units=BLOCK_LAYERS,
    cpu_compile_in_helper=True,  # steps about a quarter slower after an in-process compile (RESULTS 2.8)
    weights={
        "imagenet": HubWeights("timm/densenet201.tv_in1k",
                               torchvision_url="https://download.pytorch.org/models/densenet201-c1103571.pth",
                               top1=76.896),
    },
)
ARCHITECTURE = DENSENET201

DENSENET121 = DenseNetArchitecture(
    name="densenet121",
    aliases=("DenseNet121", "densenet-121"),
    num_units=sum(BLOCK_LAYERS_121),
    unit_name="dense layer",
    classifier_key="classifier",
    slim_stages=(0, 1, 2, 3),
    max_slim_factor=32,  # the growth rate of 32
    stage_units=BLOCK_LAYERS_121,
    cpu_compile_in_helper=True,  # 58 dense layers: a program of DenseNet201's kind
    weights={
        "imagenet": HubWeights("timm/densenet121.tv_in1k",
                               torchvision_url="https://download.pytorch.org/models/densenet121-a639ec97.pth",
                               top1=74.434),
        **CHEST_XRAY_SOURCES["densenet121"],  # torchxrayvision: xrv-chex, xrv-all
    },
)
