"""Frozen dataclasses describing a run; a run dir stores them as ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

HEADS = ("pool", "flatten", None)


@dataclass(frozen=True)
class ModelConfig:
    """Which network, where it is cut and what head sits on top.

    ``trunc`` is a block-wise point (-1 keeps the whole backbone, 1..3 keep the first stages) unless
    ``layerwise`` is set; then it is the number of units kept after the stem (bottlenecks for ResNet50,
    dense layers for DenseNet201). ``slim_from``/``slim_factor`` build the paper's TF baseline: stages
    from ``slim_from`` on are rebuilt at ``1/slim_factor`` width and randomly initialised. Stages are
    numbered from 0 as in the reference code (ResNet50 layer1 is stage 0), so the paper's TF-1,
    ``slim_from=3``, rebuilds layer4 at half width (12,947,522 parameters with a 2-class pooled head).
    """

    arch: str = "resnet50"
    trunc: int = -1
    layerwise: bool = False
    head: str | None = "pool"
    num_classes: int = 2
    image_size: int = 224
    slim_from: int | None = None
    slim_factor: int = 2
    dtype: str = "float32"  # computation dtype; parameters and BatchNorm statistics stay float32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
