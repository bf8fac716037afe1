"""What a registered architecture provides, and how truncation points are named and checked.

A model plugin registers an :class:`Architecture` under the ``ttlx.models`` entry-point group. Its
network mirrors torchvision's module names (``layer1[0].conv1``, ``features.denseblock1.denselayer1``)
so that weights convert by a generic walk (see ``convert.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttlx.config import HEADS, ModelConfig
from ttlx.errors import ConfigError


@dataclass(frozen=True)
class HubWeights:
    """Where one pretrained variant lives: a hub copy (safetensors) and torchvision's own URL.

    ``torchvision_url`` is the direct download used when the hub is out of reach; it is checked against the
    hash prefix in its file name (torchvision's), else against ``url_sha256``, and is not used without one.
    ``revision`` pins the hub commit; ``sha256``, when set, must equal the hub file's SHA-256 as well as the
    hub's published one. ``input`` names the input convention the weights were trained with
    (``imagenet``: RGB, ImageNet mean/std; ``xrv``: grey, [-1024, 1024], no mean/std).
    """

    repo_id: str
    filename: str = "model.safetensors"
    torchvision_url: str | None = None
    top1: float | None = None
    revision: str | None = None
    sha256: str | None = None
    url_sha256: str | None = None
    origin: str = "torchvision"
    trained_on: str = "ImageNet-1k"
    licence: str = "BSD-3-Clause"
    input: str = "imagenet"


@dataclass(frozen=True)
class Architecture:
    """Base class of a registered network family; subclasses implement :meth:`build`."""

    name: str
    aliases: tuple[str, ...] = ()
    block_points: tuple[int, ...] = (-1, 1, 2, 3)
    num_units: int = 0  # layer-wise points are 0..num_units
    unit_name: str = "unit"
    classifier_key: str = "fc"
    slim_stages: tuple[int, ...] = ()
    max_slim_factor: int | None = None  # the largest --slim-factor that leaves every slimmed layer a channel
    # on CPU, compile a training run's programs in a helper process first: programs this big slow the steps
    # of the process that compiled them (ttlx.runtime.precompile, benchmarks/RESULTS.md section 2.8)
    cpu_compile_in_helper: bool = False
    stage_units: tuple[int, ...] = ()  # units per stage, e.g. ResNet50 bottlenecks (3, 4, 6, 3)
    spatial_dims: int = 2  # 2: images (NHWC); 3: volumes, windows of slices (NDHWC)
    weights: dict[str, HubWeights] = field(default_factory=dict)

    def build(self, cfg: ModelConfig, rngs: Any):  # pragma: no cover - abstract
        raise NotImplementedError

    def read_torch_file(self, path) -> dict[str, Any] | None:
        """A torch-saved file in this architecture's own checkpoint layout (PENet's ``.pth.tar``) as a
        torchvision-format state dict with its module names; None: read it as any torchvision file."""
        return None

    def source_name_of(self, filename: str) -> str | None:
        """The weights name ``ttlx weights convert`` gives a file of this name when none is asked for."""
        return None

    def kept_stages(self, cfg: ModelConfig) -> int | None:
        """How many stages (numbered from 0) a config keeps; a stage counts once any of it is kept."""
        if not self.stage_units:
            return None
        if cfg.layerwise:
            starts = [sum(self.stage_units[:i]) for i in range(len(self.stage_units))]
            return sum(1 for start in starts if start < cfg.trunc)
        return len(self.stage_units) if cfg.trunc == -1 else cfg.trunc

    def layer_points(self) -> range:
        return range(0, self.num_units + 1)

    def validate(self, cfg: ModelConfig) -> None:
        """Raise :class:`ConfigError` with one sentence if ``cfg`` cannot be built."""
        if cfg.layerwise:
            if cfg.trunc not in self.layer_points():
                raise ConfigError(
                    f"{self.name} has no layer-wise truncation point {cfg.trunc}; choose a number of "
                    f"{self.unit_name}s from 0 to {self.num_units}."
                )
        elif cfg.trunc not in self.block_points:
            points = ", ".join(str(p) for p in self.block_points)
            raise ConfigError(
                f"{self.name} has no block-wise truncation point {cfg.trunc}; choose one of {points} "
                f"(or --layerwise with 0..{self.num_units})."
            )
        if cfg.head not in HEADS:
            raise ConfigError(f"Unknown head '{cfg.head}'; choose pool, flatten or none.")
        if cfg.head is not None and cfg.num_classes < 1:
            raise ConfigError(f"A {cfg.head} head needs at least 1 class, got {cfg.num_classes}.")
        min_size = 32 if self.spatial_dims == 2 else 16
        if cfg.image_size < min_size:
            raise ConfigError(f"--image-size {cfg.image_size} is too small; use at least {min_size} pixels.")
        window = getattr(cfg, "window", None)
        if self.spatial_dims == 3 and window is not None and window < 1:
            raise ConfigError(f"--window {window} holds no slices; use at least 1 slice per window.")
        if cfg.slim_from is not None:
            if not self.slim_stages:
                raise ConfigError(f"{self.name} has no slimmed version for the TF baseline; leave out --slim-from.")
            if cfg.slim_from not in self.slim_stages:
                stages = ", ".join(str(s) for s in self.slim_stages)
                raise ConfigError(f"{self.name} cannot be slimmed from stage {cfg.slim_from}; choose {stages}.")
            kept = self.kept_stages(cfg)
            if kept is not None and cfg.slim_from >= kept:
                raise ConfigError(f"--slim-from {cfg.slim_from} slims nothing: {self.name} truncated at "
                                  f"{cfg.trunc} keeps stages 0..{kept - 1}; choose a lower stage or keep more.")
            if cfg.slim_factor < 1:
                raise ConfigError(f"--slim-factor must be at least 1, got {cfg.slim_factor}.")
            if self.max_slim_factor is not None and cfg.slim_factor > self.max_slim_factor:
                raise ConfigError(f"--slim-factor {cfg.slim_factor} leaves {self.name}'s slimmed layers without "
                                  f"channels; choose 1..{self.max_slim_factor}.")


@dataclass(frozen=True)
class LegacyLayerwiseName:
    """An old model name whose ``--trunc k`` meant a layer-wise point ``k - offset`` of ``arch``.

    The reference code's ``layerttl_resnet50 --trunc k`` kept the stem and the first k-1 bottlenecks
    (k=1 the stem only, k=17 all 16); -1 kept everything.
    """

    arch: str
    offset: int = 1
    aliases: tuple[str, ...] = ()

    def translate(self, trunc: int, num_units: int) -> int:
        if trunc == -1:
            return num_units
        if not 1 <= trunc <= num_units + self.offset:
            raise ConfigError(
                f"The layer-wise index {trunc} does not exist; the original layer-wise model takes "
                f"-1 or 1..{num_units + self.offset} (k keeps k-{self.offset} units)."
            )
        return trunc - self.offset
