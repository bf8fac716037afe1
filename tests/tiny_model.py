"""Tiny test-only architectures: ResNet-shaped networks that train in seconds on 16-32 px images (tinynet)
and on windows of a few 16-32 px slices (tinynet3d, NDHWC, ``spatial_dims`` 3).

Stem (conv 3x3/2 + BatchNorm + ReLU), then three stages of 1, 2 and 1 conv units with 8, 16 and 16
channels. Block points -1, 1, 2 (stages kept); layer-wise points 0..4 (units kept after the stem).
"""

from __future__ import annotations

import jax
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models import layers
from ttlx.models.architecture import Architecture
from ttlx.models.heads import Network
from ttlx.models.layers3d import Network3D, conv3d

STAGE_DEPTHS = (1, 2, 1)
STAGE_WIDTHS = (8, 16, 16)


class Unit(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.conv = layers.conv(cin, cout, 3, stride=stride, pad=1, rngs=rngs, dtype=dtype)
        self.bn = layers.BatchNorm(cout, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.relu(self.bn(self.conv(x)))


def units_kept(cfg: ModelConfig) -> list[int]:
    total = cfg.trunc if cfg.layerwise else sum(STAGE_DEPTHS[: None if cfg.trunc == -1 else cfg.trunc])
    kept = []
    for depth in STAGE_DEPTHS:
        if total <= 0:
            break
        kept.append(min(depth, total))
        total -= depth
    return kept


class TinyStages:
    """What tinynet and tinynet3d share: a conv + BatchNorm + ReLU stem, then stages ``layer1..`` of units
    (the first unit of every stage after the first strided 2), then the head."""

    def add_stages(self, cfg: ModelConfig, cin: int, widths, make_unit, rngs: nnx.Rngs) -> None:
        names = []
        for index, count in enumerate(units_kept(cfg)):
            units = []
            for i in range(count):
                units.append(make_unit(cin, widths[index], 2 if i == 0 and index > 0 else 1))
                cin = widths[index]
            setattr(self, f"layer{index + 1}", nnx.List(units))
            names.append(f"layer{index + 1}")
        self.stage_names = tuple(names)
        self.add_head(cfg, "fc", rngs)

    def stem(self, x: jax.Array) -> jax.Array:
        return layers.relu(self.bn1(self.conv1(x)))

    def units(self):
        yield "stem", self.stem
        for stage in self.stage_names:
            for i, unit in enumerate(getattr(self, stage)):
                yield f"{stage}.{i}", unit


class TinyNet(TinyStages, Network):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.conv1 = layers.conv(3, 8, 3, stride=2, pad=1, rngs=rngs, dtype=cfg.dtype)
        self.bn1 = layers.BatchNorm(8, rngs=rngs, dtype=cfg.dtype)
        widths = [width // (cfg.slim_factor if cfg.slim_from is not None and index >= cfg.slim_from else 1)
                  for index, width in enumerate(STAGE_WIDTHS)]
        self.add_stages(cfg, 8, widths, lambda cin, cout, stride: Unit(cin, cout, stride, dtype=cfg.dtype, rngs=rngs),
                        rngs)


class TinyArchitecture(Architecture):
    def build(self, cfg: ModelConfig, rngs: nnx.Rngs) -> TinyNet:
        return TinyNet(cfg, rngs=rngs)


TINYNET = TinyArchitecture(
    name="tinynet",
    aliases=("TinyNet",),
    block_points=(-1, 1, 2),
    num_units=sum(STAGE_DEPTHS),
    unit_name="unit",
    classifier_key="fc",
    slim_stages=(0, 1, 2),
    stage_units=STAGE_DEPTHS,
)


def tiny_train_config(workdir, **overrides):
    """A TrainConfig for tinynet on 32 px fake data: 6 steps of 8 images per epoch, 3 epochs."""
    from ttlx.config import TrainConfig

    options = dict(dataset="fake", model="tinynet", trunc=-1, pretrained="random", head="pool", image_size=32,
                   batch_size=8, lr=1e-2, max_epoch=3, workdir=str(workdir))
    options.update(overrides)
    return TrainConfig(**options)


class TinyNet3D(TinyStages, Network3D):
    """tinynet over NDHWC windows: a 3x3x3 stride-2 stem (1 -> 4 channels), then stages of 1, 2 and 1 units
    with 8, 8 and 8 channels (the first unit of stages 2 and 3 strided 2)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.set_input(cfg)
        self.conv1 = conv3d(1, 4, 3, stride=2, pad=1, rngs=rngs, dtype=cfg.dtype)
        self.bn1 = layers.BatchNorm(4, rngs=rngs, dtype=cfg.dtype)
        self.add_stages(cfg, 4, (8, 8, 8),
                        lambda cin, cout, stride: Unit3D(cin, cout, stride, dtype=cfg.dtype, rngs=rngs), rngs)


class Unit3D(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.conv = conv3d(cin, cout, 3, stride=stride, pad=1, rngs=rngs, dtype=dtype)
        self.bn = layers.BatchNorm(cout, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return layers.relu(self.bn(self.conv(x)))


class TinyArchitecture3D(Architecture):
    def build(self, cfg: ModelConfig, rngs: nnx.Rngs) -> TinyNet3D:
        return TinyNet3D(cfg, rngs=rngs)


TINYNET3D = TinyArchitecture3D(
    name="tinynet3d",
    block_points=(-1, 1, 2),
    num_units=sum(STAGE_DEPTHS),
    unit_name="unit",
    classifier_key="fc",
    stage_units=STAGE_DEPTHS,
    spatial_dims=3,
)
