"""Frozen dataclasses describing a run; a run dir stores them as ``config.json``.

Every config checks its values when it is made (``__post_init__``), so a value that cannot work (a
learning rate of 0, a batch of -1, a dtype that does not exist) stops with one :class:`ConfigError`
sentence naming the ``ttlx`` flag and what it takes, before anything is read, built or written.
What depends on the architecture (truncation points, ``--freeze-until``, ``--slim-from``) or on the
dataset is checked where those are known (``Architecture.validate``, ``ttlx.training.freeze``, the data layer).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ttlx.errors import ConfigError

HEADS = ("pool", "flatten", None)
TRAIN_HEADS = ("pool", "flatten")  # training needs a classifier
RECIPES = ("paper", "penet")  # ttlx.training.recipes: the paper's (Adam, plateau) or the PENet reference's
DTYPES = ("float32", "bfloat16")  # compute dtypes; parameters and BatchNorm statistics stay float32
MIN_IMAGE_SIZE = 32
SPLIT_REPEATS = (1, 2, 3)  # the split repeats every dataset has
SPLITS = ("train", "val", "test")  # the split files of every repeat, and what ttlx eval can score
BEST, LATEST = "best", "latest"  # a run dir's checkpoints: best validation loss, and the newest epoch
CHECKPOINTS = (BEST, LATEST)
MAX_SEED = 2**32 - 1  # numpy's and grain's seeds are unsigned 32-bit


def _plain_values(config) -> None:
    """Turn numpy scalars (an ``np.int64`` trunc taken from an array) into Python values, so checks and
    ``config.json`` see plain numbers."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            object.__setattr__(config, f.name, value.item())


def _shown(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def check_int(value: Any, flag: str, low: int | None = None, high: int | None = None, what: str = "") -> None:
    """Raise one sentence unless ``value`` is an int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{flag} takes an integer, got {_shown(value)}.")
    if (low is not None and value < low) or (high is not None and value > high):
        if what:
            wanted = what
        elif high is None:
            wanted = f"at least {low}"
        elif low is None:
            wanted = f"at most {high}"
        else:
            wanted = f"from {low} to {high}"
        raise ConfigError(f"{flag} must be {wanted}, got {value}.")


def check_number(value: Any, flag: str, *, positive: bool = False, what: str = "") -> None:
    """Raise one sentence unless ``value`` is a finite real number, > 0 when ``positive``, else >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{flag} takes a number, got {_shown(value)}.")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        wanted = what or ("a positive number" if positive else "0 or a positive number")
        raise ConfigError(f"{flag} must be {wanted}, got {value:g}.")


def check_fraction(value: Any, flag: str, what: str) -> None:
    """Raise one sentence unless ``value`` is a number strictly between 0 and 1."""
    check_number(value, flag, positive=True, what=f"between 0 and 1 ({what})")
    if value >= 1:
        raise ConfigError(f"{flag} must be between 0 and 1 ({what}), got {value:g}.")


def check_image_size(value: Any) -> None:
    check_int(value, "--image-size")
    if value < MIN_IMAGE_SIZE:
        raise ConfigError(f"--image-size {value} is too small; use at least {MIN_IMAGE_SIZE} pixels.")


def check_choice(value: Any, flag: str, choices: tuple) -> None:
    if value not in choices:
        names = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{flag} must be one of {names}, got {_shown(value)}.")


def check_text(value: Any, flag: str, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{flag} takes a name or path, got {_shown(value)}.")


def check_bool(value: Any, flag: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{flag} is on or off (true or false), got {_shown(value)}.")


def check_bootstrap(value: Any) -> None:
    """``--bootstrap``: resamples for the confidence intervals, 0 for none (and ``$TTLX_BOOTSTRAP_WORKERS``)."""
    check_int(value, "--bootstrap", 0, what="0 (no intervals) or a number of resamples")
    from ttlx import settings

    settings.bootstrap_workers()


def check_seed(value: Any) -> None:
    check_int(value, "--seed", 0, MAX_SEED)


class DictRecord:
    """``to_dict``/``from_dict`` for the config dataclasses (unknown keys of older records are ignored)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ModelConfig(DictRecord):
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
    window: int | None = None  # slices per window of a 3D network (None for 2D); image_size stays in-plane
    stochastic_depth: bool = True  # PENet's training-time stochastic depth (networks without it ignore it)
    in_channels: int = 3  # of the first convolution: 1 keeps a grey chest-X-ray stem as published (Python API)

    def __post_init__(self) -> None:
        _plain_values(self)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` with one sentence for a value no architecture can take."""
        check_text(self.arch, "--model")
        check_choice(self.in_channels, "in_channels", (1, 3))
        check_int(self.trunc, "--trunc")
        check_bool(self.layerwise, "--layerwise")
        if self.head not in HEADS:
            raise ConfigError(f"Unknown head {_shown(self.head)}; choose pool, flatten or none.")
        check_int(self.num_classes, "--classes", 0)
        if self.head is not None and self.num_classes < 1:
            raise ConfigError(f"--classes must be at least 1 for a {self.head} head, got {self.num_classes}.")
        _check_network_shape(self)


def _check_network_shape(cfg) -> None:
    """The options a model and a training config share: input size, slimming and compute dtype."""
    check_image_size(cfg.image_size)
    if cfg.slim_from is not None:
        check_int(cfg.slim_from, "--slim-from", 0)
    check_int(cfg.slim_factor, "--slim-factor", 1)
    check_choice(cfg.dtype, "--dtype", DTYPES)
    if cfg.window is not None:
        check_int(cfg.window, "--window", 1, what="a number of slices per window")
    check_bool(cfg.stochastic_depth, "--stochastic-depth")


@dataclass(frozen=True)
class TrainConfig(DictRecord):
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
    window: int | None = None  # slices per window on volumes (None: 2D, or the 3D default of 24)
    stochastic_depth: bool = True  # PENet's stochastic depth in training (--no-stochastic-depth turns it off)
    recipe: str = "paper"  # paper: Adam + plateau; penet: focal loss, SGD, warmup-cosine (ttlx.training.recipes)
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
    num_workers: int | None = None  # None: ttlx.data.loader_size.loader_workers chooses for the backend
    data_dir: str | None = None
    workdir: str | None = None

    def __post_init__(self) -> None:
        _plain_values(self)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` with one sentence naming the flag, before any run is started."""
        check_text(self.dataset, "--dataset")
        check_text(self.model, "--model")
        check_int(self.trunc, "--trunc")
        check_bool(self.layerwise, "--layerwise")
        check_text(self.pretrained, "--pretrained")
        if self.head in (None, "none"):
            raise ConfigError("Training needs a classifier head; choose --head pool or --head flatten.")
        check_choice(self.head, "--head", TRAIN_HEADS)
        check_choice(self.recipe, "--recipe", RECIPES)
        _check_network_shape(self)
        check_choice(self.exp, "--exp", SPLIT_REPEATS)
        check_int(self.sub, "--sub", 1, 100, what="a percentage in 1..100")
        check_int(self.batch_size, "--bs", 1)
        check_number(self.lr, "--lr", positive=True)
        check_number(self.weight_decay, "--weight-decay")
        check_int(self.max_epoch, "--max-epoch", 1)
        check_fraction(self.plateau_factor, "--factor", "it multiplies the learning rate on a plateau")
        check_int(self.plateau_patience, "--patience", 0)
        check_number(self.plateau_threshold, "plateau_threshold")
        check_number(self.min_lr, "--min-lr")
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}, so training would stop before "
                              f"its first epoch; choose a lower --min-lr or a higher --lr.")
        check_bool(self.class_weighted, "--class-weights")
        if self.freeze_until is not None:
            check_int(self.freeze_until, "--freeze-until", 0)
        check_number(self.ptl_decay, "--ptl-decay", positive=True)
        check_seed(self.seed)
        if self.num_workers is not None:
            check_int(self.num_workers, "--num-workers", 0)
        check_text(self.data_dir, "--data-dir", optional=True)
        check_text(self.workdir, "--workdir", optional=True)


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
    aggregate: str = "max"  # volumes: a study's probability from its windows' (max or mean)

    def __post_init__(self) -> None:
        _plain_values(self)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` with one sentence naming the flag, before the run dir is read."""
        check_text(self.run_dir, "RUN_DIR")
        if self.split not in SPLITS:
            raise ConfigError(f"Unknown split {_shown(self.split)}; choose one of {', '.join(SPLITS)}.")
        if self.checkpoint not in CHECKPOINTS:
            raise ConfigError(f"Unknown checkpoint {_shown(self.checkpoint)}; choose best or latest.")
        check_bootstrap(self.bootstrap)
        check_seed(self.seed)
        check_text(self.data_dir, "--data-dir", optional=True)
        if self.batch_size is not None:
            check_int(self.batch_size, "--bs", 1)
        check_choice(self.aggregate, "--aggregate", ("max", "mean"))
