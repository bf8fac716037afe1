"""ResNet50 as torchvision builds it ("V1.5": stride on the 3x3 conv), cut after any bottleneck.

Block-wise point t keeps the stem and layer1..layer_t (-1: all four); layer-wise point n keeps the stem
and the first n of the 16 bottlenecks. Only the kept bottlenecks are built.
"""

from __future__ import annotations

import jax
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models import layers
from ttlx.models.architecture import Architecture, HubWeights, LegacyLayerwiseName
from ttlx.models.heads import Network
from ttlx.models.weights.sources import CHEST_XRAY_SOURCES

STAGE_DEPTHS = (3, 4, 6, 3)
STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = 4


class Bottleneck(nnx.Module):
    def __init__(self, cin: int, planes: int, stride: int, *, dtype, rngs: nnx.Rngs):
        cout = planes * EXPANSION
        self.conv1 = layers.conv(cin, planes, 1, rngs=rngs, dtype=dtype)
        self.bn1 = layers.BatchNorm(planes, rngs=rngs, dtype=dtype)
        self.conv2 = layers.conv(planes, planes, 3, stride=stride, pad=1, rngs=rngs, dtype=dtype)
        self.bn2 = layers.BatchNorm(planes, rngs=rngs, dtype=dtype)
        self.conv3 = layers.conv(planes, cout, 1, rngs=rngs, dtype=dtype)
        self.bn3 = layers.BatchNorm(cout, rngs=rngs, dtype=dtype)
        if stride != 1 or cin != cout:
            self.downsample = nnx.List([layers.conv(cin, cout, 1, stride=stride, rngs=rngs, dtype=dtype),
                                        layers.BatchNorm(cout, rngs=rngs, dtype=dtype)])
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = layers.relu(self.bn1(self.conv1(x)))
        y = layers.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return layers.relu(y + shortcut)


def kept_per_stage(bottlenecks: int) -> list[int]:
    """How many bottlenecks of each stage the first ``bottlenecks`` cover, e.g. 11 -> [3, 4, 4]."""
    kept, left = [], bottlenecks
    for depth in STAGE_DEPTHS:
        if left <= 0:
            break
        kept.append(min(depth, left))
        left -= depth
    return kept


class ResNet(Network):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = cfg.dtype
        self.conv1 = layers.conv(cfg.in_channels, 64, 7, stride=2, pad=3, rngs=rngs, dtype=dtype)
        self.bn1 = layers.BatchNorm(64, rngs=rngs, dtype=dtype)
        stage_names = []
        cin = 64
        for index, count in enumerate(kept_per_stage(RESNET50.bottlenecks(cfg))):
            stage = index + 1
            slim = cfg.slim_factor if cfg.slim_from is not None and index >= cfg.slim_from else 1
            planes = STAGE_PLANES[index] // slim
            blocks = []
            for i in range(count):
                stride = 2 if i == 0 and index > 0 else 1
                blocks.append(Bottleneck(cin, planes, stride, dtype=dtype, rngs=rngs))
                cin = planes * EXPANSION
            setattr(self, f"layer{stage}", nnx.List(blocks))
            stage_names.append(f"layer{stage}")
        self.stage_names = tuple(stage_names)
        self.add_head(cfg, RESNET50.classifier_key, rngs)

    def stem(self, x: jax.Array) -> jax.Array:
        return layers.max_pool_3x3_s2(layers.relu(self.bn1(self.conv1(x))))

    def units(self):
        yield "stem", self.stem
        for stage in self.stage_names:
            for i, block in enumerate(getattr(self, stage)):
                yield f"{stage}.{i}", block


class ResNetArchitecture(Architecture):
    def bottlenecks(self, cfg: ModelConfig) -> int:
        """Number of bottlenecks a config keeps."""
        if cfg.layerwise:
            return cfg.trunc
        stages = len(STAGE_DEPTHS) if cfg.trunc == -1 else cfg.trunc
        return sum(STAGE_DEPTHS[:stages])

    def build(self, cfg: ModelConfig, rngs: nnx.Rngs) -> ResNet:
        return ResNet(cfg, rngs=rngs)


_TV = "https://download.pytorch.org/models/"
RESNET50 = ResNetArchitecture(
    name="resnet50",
    aliases=("ResNet50", "resnet-50"),
    num_units=sum(STAGE_DEPTHS),
    unit_name="bottleneck",
    classifier_key="fc",
    slim_stages=(0, 1, 2, 3),
    max_slim_factor=64,  # layer1's 64 planes
    stage_units=STAGE_DEPTHS,
    weights={
        "imagenet": HubWeights("timm/resnet50.tv_in1k", torchvision_url=_TV + "resnet50-0676ba61.pth", top1=76.130),
        "imagenet-v2": HubWeights("timm/resnet50.tv2_in1k", torchvision_url=_TV + "resnet50-11ad3fa6.pth",
                                  top1=80.858),
        **CHEST_XRAY_SOURCES["resnet50"],  # torchxrayvision's xrv-res512 (no CheXpert in it)
    },
)
ARCHITECTURE = RESNET50
LAYERTTL = LegacyLayerwiseName(arch="resnet50", offset=1)
