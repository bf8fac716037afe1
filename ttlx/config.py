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


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; the defaults are the paper's recipe (ANCHORS.md section 5).

    ``model``/``trunc``/``layerwise``/``head``/... resolve into a :class:`ModelConfig` once the dataset's
    classes are known. ``freeze_until`` (LWFT) freezes the stem plus the first K blocks (K units when
    ``layerwise``); ``ptl_decay`` divides the learning rate of the rest of the backbone.
    """

    dataset: str = "digits"
    model: str = "resnet50"
    trunc: int = -1
    layerwise: bool = False
    pretrained: str = "imagenet"
    head: str | None = "flatten"
    image_size: int = 224
    slim_from: int | None = None
    slim_factor: int = 2
    dtype: str = "float32"
    exp: int = 1
    sub: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_epoch: int = 200
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    plateau_threshold: float = 1e-4
    min_lr: float = 1e-6  # training stops once the learning rate falls below this
    class_weighted: bool = True
    freeze_until: int | None = None
    ptl_decay: float = 1.0
    seed: int = 0
    num_workers: int = 0
    data_dir: str | None = None
    workdir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EvalConfig:
    """Which run, split and checkpoint to evaluate, and how many bootstrap resamples give the CIs."""

    run_dir: str
    split: str = "test"
    checkpoint: str = "best"
    bootstrap: int = 1000
    seed: int = 0
    data_dir: str | None = None  # default: the data dir the run was trained on
    batch_size: int | None = None  # default: the run's batch size
