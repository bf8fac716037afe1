"""R3D-18, torchvision's video ResNet-18 (``r3d_18``), over NDHWC windows, cut after any basic block.

Stem: a 3x7x7 conv (stride 1x2x2, no pooling) + BatchNorm3d + ReLU; four stages of two basic blocks
(3x3x3 convs) with 64/128/256/512 channels, the first block of stages 2-4 strided 2 in depth, height and
width. Block-wise point t keeps the stem and layer1..layer_t (-1: all four); layer-wise point n keeps the
stem and the first n of the 8 basic blocks. Module names are torchvision's (``stem.0``, ``layer1.0.conv1.0``)
so its Kinetics-400 weights load by the generic walk.
"""

from __future__ import annotations

import jax
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models import layers
from ttlx.models.architecture import Architecture, HubWeights
from ttlx.models.layers3d import Network3D, conv3d, kept_per_stage, stem_conv, units_kept

STAGE_DEPTHS = (2, 2, 2, 2)
STAGE_PLANES = (64, 128, 256, 512)


class BasicBlock(nnx.Module):
    def __init__(self, cin: int, planes: int, stride: int, *, dtype, rngs: nnx.Rngs):
        self.conv1 = nnx.List([conv3d(cin, planes, 3, stride=stride, pad=1, rngs=rngs, dtype=dtype),
                               layers.BatchNorm(planes, rngs=rngs, dtype=dtype)])
        self.conv2 = nnx.List([conv3d(planes, planes, 3, pad=1, rngs=rngs, dtype=dtype),
                               layers.BatchNorm(planes, rngs=rngs, dtype=dtype)])
        if stride != 1 or cin != planes:
            self.downsample = nnx.List([conv3d(cin, planes, 1, stride=stride, rngs=rngs, dtype=dtype),
                                        layers.BatchNorm(planes, rngs=rngs, dtype=dtype)])
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layers.relu(self.conv1[1](self.conv1[0](x)))
        y = self.conv2[1](self.conv2[0](y))
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return layers.relu(y + shortcut)


class VideoResNet(Network3D):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = cfg.dtype
        self.set_input(cfg)
        self.stem = nnx.List([conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), pad=(1, 3, 3), rngs=rngs, dtype=dtype),
                              layers.BatchNorm(64, rngs=rngs, dtype=dtype)])
        names, cin = [], 64
        for index, count in enumerate(kept_per_stage(units_kept(cfg, STAGE_DEPTHS), STAGE_DEPTHS)):
            planes = STAGE_PLANES[index]
            blocks = []
            for i in range(count):
                blocks.append(BasicBlock(cin, planes, 2 if i == 0 and index > 0 else 1, dtype=dtype, rngs=rngs))
                cin = planes
            setattr(self, f"layer{index + 1}", nnx.List(blocks))
            names.append(f"layer{index + 1}")
        self.stage_names = tuple(names)
        self.add_head(cfg, R3D_18.classifier_key, rngs)

    def stem_fn(self, x: jax.Array) -> jax.Array:
        return layers.relu(self.stem[1](stem_conv(self.stem[0], x)))

    def units(self):
        yield "stem", self.stem_fn
        for stage in self.stage_names:
            for i, block in enumerate(getattr(self, stage)):
                yield f"{stage}.{i}", block


class R3DArchitecture(Architecture):
    def build(self, cfg: ModelConfig, rngs: nnx.Rngs) -> VideoResNet:
        return VideoResNet(cfg, rngs=rngs)


R3D_18 = R3DArchitecture(
    name="r3d_18",
    aliases=("r3d18", "R3D-18", "r3d-18"),
    num_units=sum(STAGE_DEPTHS),
    unit_name="basic block",
    classifier_key="fc",
    stage_units=STAGE_DEPTHS,
    spatial_dims=3,
    weights={
        # torchvision's Kinetics-400 clip classifier (video-level top-1 63.2); no hub copy
        "kinetics400": HubWeights("", torchvision_url="https://download.pytorch.org/models/r3d_18-b3b3357e.pth",
                                  top1=63.200, trained_on="Kinetics-400 (16-frame 112 px clips)"),
    },
)
ARCHITECTURE = R3D_18
