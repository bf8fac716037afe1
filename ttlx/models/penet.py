"""PENet (``PENetClassifier``, depth 50) over NDHWC windows, cut after any bottleneck.

Facts from the published PENet code (Huang et al. 2020): a 7x7x7 stem conv (3 -> 64 channels, stride
1x2x2, no bias) + GroupNorm + LeakyReLU and a 3x3x3 max pool (stride 2); four stages of [3, 4, 6, 3]
ResNeXt-style bottlenecks with 256/512/1024/2048 output channels (the first block of stages 2-4 strided 2).
A bottleneck is 1x1x1 conv -> GN -> LeakyReLU -> 3x3x3 conv in 32 groups -> GN -> LeakyReLU -> 1x1x1 conv
-> GN (scale initialised to 0) -> squeeze-excitation (reduction 16) -> + skip -> LeakyReLU. Every
GroupNorm has one group per 16 channels; there is no BatchNorm. A 1x24x192x192 window ends as
2048x2x6x6. Block-wise point t keeps the stem and stages 1..t; layer-wise point n the first n of the
16 bottlenecks.

Stochastic depth in training: bottleneck k (0..15) survives with probability ``1 - k/16 * 0.5``, drawn once
per batch; a dropped block returns its skip path without the final LeakyReLU, and nothing is rescaled.
``ModelConfig.stochastic_depth=False`` turns it off. Module names follow the reference
(``in_conv.0``, ``encoders.2.penet_blocks.5.conv2``) so ``ttlx.models.weights.penet_checkpoint`` only
renames the SE layers and the classifier.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from ttlx.config import ModelConfig
from ttlx.models import layers, layers3d
from ttlx.models.architecture import Architecture
from ttlx.models.layers3d import Network3D, conv3d, global_avg_pool, group_norm, leaky_relu, stem_conv

STAGE_DEPTHS = (3, 4, 6, 3)
STAGE_CHANNELS = (128, 256, 512, 1024)  # bottleneck width; the output is twice that
EXPANSION = 2
CARDINALITY = 32
SE_REDUCTION = 16
FINAL_SURVIVAL = 0.5
init = layers.conv_init_fan_in  # the reference's kaiming_normal_ (fan in) for convs and linears


def survival_probability(index: int, total: int = sum(STAGE_DEPTHS)) -> float:
    """Chance that bottleneck ``index`` (0-based over the network) runs in a training step."""
    return 1.0 - index / total * (1.0 - FINAL_SURVIVAL)


class DepthKey(nnx.Variable):
    """The raw key data (uint32) of a block's stochastic-depth draws; advanced at every training call."""


class SEBlock(nnx.Module):
    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        hidden = channels // SE_REDUCTION
        self.fc1 = nnx.Linear(channels, hidden, kernel_init=init, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, channels, kernel_init=init, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        gate = jax.nn.sigmoid(self.fc2(leaky_relu(self.fc1(global_avg_pool(x)))))
        return x * gate[:, None, None, None, :].astype(x.dtype)


class Bottleneck(nnx.Module):
    def __init__(self, cin: int, channels: int, stride: int, survival: float, *, stochastic: bool, dtype,
                 rngs: nnx.Rngs):
        mid, cout = CARDINALITY * (channels // CARDINALITY), channels * EXPANSION
        self.conv1 = conv3d(cin, mid, 1, init=init, rngs=rngs, dtype=dtype)
        self.norm1 = group_norm(mid, dtype=dtype)
        self.conv2 = conv3d(mid, mid, 3, stride=stride, pad=1, groups=CARDINALITY, init=init, rngs=rngs, dtype=dtype)
        self.norm2 = group_norm(mid, dtype=dtype)
        self.conv3 = conv3d(mid, cout, 1, init=init, rngs=rngs, dtype=dtype)
        self.norm3 = group_norm(cout, zero_scale=True, dtype=dtype)
        self.se_block = SEBlock(cout, dtype=dtype, rngs=rngs)
        if stride != 1 or cin != cout:
            self.down_sample = nnx.List([conv3d(cin, cout, 1, stride=stride, init=init, rngs=rngs, dtype=dtype),
                                         group_norm(cout, dtype=dtype)])
        else:
            self.down_sample = None
        self.survival = survival
        self.deterministic = False  # Module.train()/eval() set it
        drops = stochastic and survival < 1.0
        self.drop_key = DepthKey(jax.random.key_data(rngs["dropout"]())) if drops else None

    def residual(self, x: jax.Array, skip: jax.Array) -> jax.Array:
        y = leaky_relu(self.norm1(self.conv1(x)))
        y = leaky_relu(self.norm2(self.conv2(y)))
        y = self.se_block(self.norm3(self.conv3(y)))
        return leaky_relu(y + skip)

    def __call__(self, x: jax.Array) -> jax.Array:
        skip = x if self.down_sample is None else self.down_sample[1](self.down_sample[0](x))
        if self.drop_key is None or self.deterministic:
            return self.residual(x, skip)
        key, draw = jax.random.split(jax.random.wrap_key_data(self.drop_key.get_value()))
        self.drop_key.set_value(jax.random.key_data(key))
        keep = jax.random.uniform(draw) <= self.survival
        return lax.cond(keep, lambda x: self.residual(x, skip), lambda x: skip, x)


class Encoder(nnx.Module):
    def __init__(self, blocks: list[Bottleneck]):
        self.penet_blocks = nnx.List(blocks)


class PENet(Network3D):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = cfg.dtype
        self.set_input(cfg)
        stochastic = getattr(cfg, "stochastic_depth", True)
        self.in_conv = nnx.List([conv3d(3, 64, 7, stride=(1, 2, 2), pad=3, init=init, rngs=rngs, dtype=dtype),
                                 group_norm(64, dtype=dtype)])
        encoders, cin, index = [], 64, 0
        for stage, count in enumerate(layers3d.kept_per_stage(layers3d.units_kept(cfg, STAGE_DEPTHS), STAGE_DEPTHS)):
            blocks = []
            for i in range(count):
                stride = 2 if i == 0 and stage > 0 else 1
                blocks.append(Bottleneck(cin, STAGE_CHANNELS[stage], stride, survival_probability(index),
                                         stochastic=stochastic, dtype=dtype, rngs=rngs))
                cin, index = STAGE_CHANNELS[stage] * EXPANSION, index + 1
            encoders.append(Encoder(blocks))
        self.encoders = nnx.List(encoders)
        self.add_head(cfg, PENET.classifier_key, rngs)

    def stem(self, x: jax.Array) -> jax.Array:
        return layers3d.max_pool3d(leaky_relu(self.in_conv[1](stem_conv(self.in_conv[0], x))))

    def units(self):
        yield "stem", self.stem
        for i, encoder in enumerate(self.encoders):
            for j, block in enumerate(encoder.penet_blocks):
                yield f"encoders.{i}.penet_blocks.{j}", block


class PENetArchitecture(Architecture):
    def build(self, cfg: ModelConfig, rngs: nnx.Rngs) -> PENet:
        return PENet(cfg, rngs=rngs)

    def read_torch_file(self, path):
        """PENet's ``.pth.tar`` checkpoints (or a saved ``state_dict()``), renamed to ttlx's modules."""
        from ttlx.models.weights.penet_checkpoint import read_checkpoint

        return read_checkpoint(path)[0]

    def source_name_of(self, filename: str) -> str | None:
        """The published Kinetics-600 file is ``xnet_kin_90.pth.tar``; others are taken for the PE model."""
        return "kinetics600" if "kin" in filename.lower() else "pe"


PENET = PENetArchitecture(
    name="penet",
    aliases=("PENet", "penet50"),
    num_units=sum(STAGE_DEPTHS),
    unit_name="bottleneck",
    classifier_key="fc",
    stage_units=STAGE_DEPTHS,
    spatial_dims=3,
)
ARCHITECTURE = PENET
