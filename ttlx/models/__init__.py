"""Model construction: ``create_model`` resolves a registered architecture, builds the kept part and
loads pretrained weights."""

from __future__ import annotations

from typing import Any

from ttlx.config import ModelConfig
from ttlx.models.architecture import Architecture, LegacyLayerwiseName

__all__ = ["create_model", "resolve_config", "build_model", "get_architecture"]


def get_architecture(name: str) -> Architecture:
    from ttlx import registry

    spec = registry.models.get(name)
    if isinstance(spec, LegacyLayerwiseName):
        spec = registry.models.get(spec.arch)
    return spec


def resolve_config(name: str, trunc: int = -1, *, layerwise: bool = False, head: str | None = "pool",
                   num_classes: int = 1000, image_size: int = 224, slim_from: int | None = None,
                   slim_factor: int = 2, dtype: str = "float32",
                   window: int | None = None, in_channels: int = 3,
                   stochastic_depth: bool = True) -> tuple[Architecture, ModelConfig]:
    """Resolve names and legacy spellings into a validated :class:`ModelConfig`.

    ``layerttl_resnet50 --trunc k`` (the reference code's name) becomes resnet50 layer-wise ``k - 1``.
    """
    from ttlx import registry

    spec = registry.models.get(name)
    if isinstance(spec, LegacyLayerwiseName):
        arch = registry.models.get(spec.arch)
        trunc, layerwise = spec.translate(trunc, arch.num_units), True
    else:
        arch = spec
    if head == "none":
        head = None
    cfg = ModelConfig(arch=arch.name, trunc=trunc, layerwise=layerwise, head=head, num_classes=num_classes,
                      image_size=image_size, slim_from=slim_from, slim_factor=slim_factor, dtype=dtype,
                      window=window if arch.spatial_dims == 3 else None, in_channels=in_channels,
                      stochastic_depth=stochastic_depth)
    arch.validate(cfg)
    return arch, cfg


def build_model(arch: Architecture, cfg: ModelConfig, seed: int = 0):
    """Build the kept part of the network with random (torchvision-style) initialisation.

    Initialisation runs under ``nnx.jit``: eagerly, every differently shaped layer compiles its own ops.
    """
    from flax import nnx

    @nnx.jit
    def init():
        return arch.build(cfg, nnx.Rngs(seed))

    return init()


def create_model(name: str, trunc: int = -1, *, num_classes: int = 1000, head: str | None = "pool",
                 pretrained: Any = "random", layerwise: bool = False, image_size: int = 224,
                 slim_from: int | None = None, slim_factor: int = 2, dtype: str = "float32", seed: int = 0,
                 window: int | None = None, in_channels: int = 3, stochastic_depth: bool = True):
    """Build a (truncated) network and load ``pretrained`` weights into its kept part.

    ``pretrained``: ``"imagenet"``, ``"imagenet-v2"``, ``"random"``, a torchvision-format ``.safetensors``
    or ``.pth`` file, or a ttlx run dir. Stages rebuilt by ``slim_from`` stay randomly initialised.
    ``window``: slices per window of a 3D network (``penet``, ``r3d_18``; None: 24); 2D networks ignore it.
    ``stochastic_depth``: PENet's random skipping of blocks in training (networks without it ignore it).
    ``in_channels=1`` (ResNet50, DenseNets) builds a 1-channel first convolution: a chest-X-ray source's
    grey stem loads as published, a 3-channel one as the sum over its channels (the same on grey images).
    """
    arch, cfg = resolve_config(name, trunc, layerwise=layerwise, head=head, num_classes=num_classes,
                               image_size=image_size, slim_from=slim_from, slim_factor=slim_factor, dtype=dtype,
                               window=window, in_channels=in_channels, stochastic_depth=stochastic_depth)
    from ttlx.models.weights.pretrained import load_pretrained, read_weights

    weights = read_weights(arch, cfg, pretrained)  # a bad or missing source fails before the slow build
    model = build_model(arch, cfg, seed)
    if weights is not None:
        load_pretrained(model, arch, cfg, weights)
    return model
