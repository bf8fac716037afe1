"""Where pretrained weights come from and how they reach a (truncated) model.

A source is ``"random"``, a named variant of the architecture (``"imagenet"``, ``"imagenet-v2"``, or a name
given to ``ttlx weights convert``), a torchvision-format ``.safetensors``/``.pth`` file, a ttlx run dir,
or an in-memory state dict. Named variants are converted once into the cache
(``$TTLX_CACHE_DIR/weights/<arch>/<name>.safetensors``, Flax layout) and read from there afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttlx import settings
from ttlx.config import ModelConfig
from ttlx.errors import WeightsError
from ttlx.models.architecture import Architecture
from ttlx.models.weights import convert
from ttlx.models.weights.download import download, torchvision_hash_prefix, verify
from ttlx.models.weights.safetensors_file import read_safetensors
from ttlx.models.weights.sources import source_rows as weights_rows  # noqa: F401  (ttlx weights list's rows)

FLAX_FORMAT = "ttlx-flax-nnx-1"  # metadata tag of files already in the Flax layout
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
CHEXPERT = "chexpert"  # the paper's CheXpert source (never released): see ttlx.models.weights.sources
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a cache file name: no path, no shell syntax
_REFERENCE_SHAPES: dict[tuple[str, str], dict[str, tuple]] = {}


@dataclass(frozen=True)
class Source:
    """A resolved ``pretrained`` argument: kind is random, named, file, run or mapping."""

    kind: str
    value: Any = None
    label: str = ""
    stands_for: str = ""  # "chexpert" when a public source substitutes for the paper's unreleased weights


@dataclass
class SourceWeights:
    """Flat Flax weights read from a source, with the config of the run that wrote them, if any."""

    flat: dict[str, np.ndarray]
    origin: str
    run_config: ModelConfig | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def converted_path(arch_name: str, name: str) -> Path:
    return settings.cache_dir() / "weights" / arch_name / f"{name}.safetensors"


def cached_names(arch_name: str) -> list[str]:
    folder = settings.cache_dir() / "weights" / arch_name
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []


def source_names(arch: Architecture) -> list[str]:
    return sorted(set(arch.weights) | set(cached_names(arch.name)))


def resolve_source(arch: Architecture, source: Any) -> Source:
    """Check a ``pretrained`` argument without reading weights; raise one sentence naming valid choices."""
    if source is None or source == "random":
        return Source("random")
    if isinstance(source, Mapping):
        return Source("mapping", source, "the given state dict")
    name = str(source)
    if name == CHEXPERT:  # the paper's source name: imported weights, else a public substitute, else refused
        from ttlx.models.weights.sources import chexpert_source

        name = chexpert_source(arch)[0]
        if name != CHEXPERT:
            return Source("named", name, f"the {name} weights of {arch.name} (for chexpert)", CHEXPERT)
    if name in source_names(arch):
        return Source("named", name, f"the {name} weights of {arch.name}")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsError(f"{path} is a folder but not a ttlx run dir (it has no config.json); "
                               f"give a run dir, a .safetensors/.pth file or a source name.")
        return Source("run", path, f"the run dir {path}")
    if path.is_file():
        return Source("file", path, str(path))
    if path.suffix in WEIGHT_SUFFIXES or "/" in name:
        raise WeightsError(f"The weights file {path} does not exist; check the path.")
    choices = ", ".join([*source_names(arch), "random"])
    raise WeightsError(f"Unknown pretrained source '{name}' for {arch.name}; choose {choices}, a "
                       f".safetensors/.pth file or a ttlx run dir.")


def read_file(path: Path, arch: Architecture | None = None) -> SourceWeights:
    """Flat float32 Flax weights from a torchvision-format or already converted file.

    Refused with one sentence: an empty, truncated or corrupt file, a tensor that is not float16, bfloat16,
    float32 or float64, NaN or infinite values, and (``.pth``) any pickled object but tensors.
    """
    try:
        size = path.stat().st_size
    except OSError as err:
        raise WeightsError(f"The weights file {path} cannot be read ({err.strerror}); check the path.") from None
    if size == 0:
        raise WeightsError(f"{path} is empty (0 bytes); download it again or give another weights file.")
    own = arch.read_torch_file(path) if arch is not None and path.suffix != ".safetensors" else None
    if path.suffix == ".safetensors":
        tensors, metadata = read_safetensors(path)
    elif own is not None:  # a network's own checkpoint layout (PENet's .pth.tar)
        tensors, metadata = own, {}
    else:
        from ttlx.models.weights.torchmodule import backbone_keys, read_module_file

        state, classes = read_module_file(path)  # a state dict, or a whole pickled module's tensors
        tensors, head = backbone_keys(state)
        metadata = {"classes": " > ".join(classes), "dropped_head": str(len(head))} if classes else {}
    if metadata.get("format") == FLAX_FORMAT:
        flat = {key: convert.as_weight(key, value, str(path)) for key, value in tensors.items()}
    else:
        flat = convert.from_torchvision(tensors, origin=str(path))
    return SourceWeights(flat, str(path), metadata=metadata)


def read_run_dir(path: Path) -> SourceWeights:
    from ttlx.runs.checkpoint import load_run_weights

    run_config, flat = load_run_weights(path)
    return SourceWeights({k: np.asarray(v) for k, v in flat.items()}, f"the run dir {path}", run_config)


def read_source(arch: Architecture, source: Source) -> SourceWeights | None:
    if source.kind == "random":
        return None
    if source.kind == "mapping":
        return SourceWeights(convert.from_torchvision(source.value, origin="The given state dict"), source.label)
    if source.kind == "run":
        return read_run_dir(source.value)
    if source.kind == "file":
        return read_file(source.value, arch)
    path = converted_path(arch.name, source.value)
    if not path.exists():
        try:
            fetch(arch, source.value)
        except WeightsError as err:
            if not source.stands_for:
                raise
            raise WeightsError(f"--pretrained {source.stands_for} stands for {source.value} here, the paper's "
                               f"CheXpert weights never having been released: {err}") from None
    weights = read_file(path)
    weights.origin = source.label
    return weights


def reference_shapes(arch: Architecture, model=None, cfg: ModelConfig | None = None) -> dict[str, tuple]:
    """Shapes of the whole full-width backbone (no head), found once per architecture and process.

    A whole, unslimmed ``model`` is its own reference; otherwise the backbone is traced abstractly.
    """
    key = (arch.name, type(arch).__qualname__)
    if key in _REFERENCE_SHAPES:
        return _REFERENCE_SHAPES[key]
    whole = cfg is not None and (cfg.layerwise, cfg.trunc, cfg.slim_from, cfg.in_channels) == (False, -1, None, 3)
    if model is not None and whole:
        head = arch.classifier_key + "."
        shapes = {k: s for k, s in convert.variable_shapes(model).items() if not k.startswith(head)}
    else:
        from flax import nnx

        full = ModelConfig(arch=arch.name, trunc=-1, head=None, num_classes=1000)
        shapes = convert.variable_shapes(nnx.eval_shape(lambda: arch.build(full, nnx.Rngs(0))))
    _REFERENCE_SHAPES[key] = shapes
    return shapes


def describe(cfg: ModelConfig) -> str:
    """How a config cuts its network, in words: ``resnet50 cut at block-wise point 2``, ``resnet50 uncut``."""
    if cfg.layerwise:
        where = f"cut at layer-wise point {cfg.trunc}"
    else:
        where = "uncut" if cfg.trunc == -1 else f"cut at block-wise point {cfg.trunc}"
    slim = f", slimmed 1/{cfg.slim_factor} from stage {cfg.slim_from}" if cfg.slim_from is not None else ""
    return f"{cfg.arch} {where}{slim}"


def check_architecture(weights: SourceWeights, cfg: ModelConfig) -> str:
    """Refuse weights labelled with another architecture; return the origin, naming the run's cut if any."""
    run = weights.run_config
    labelled = run.arch if run is not None else weights.metadata.get("arch", cfg.arch)
    if labelled != cfg.arch:
        kind = "run" if run is not None else "weights file"
        raise WeightsError(f"{weights.origin} holds {labelled} weights, which cannot initialise {cfg.arch}; "
                           f"pick a {cfg.arch} {kind} or another pretrained source.")
    return weights.origin if run is None else f"{weights.origin} ({describe(run)})"


def read_weights(arch: Architecture, cfg: ModelConfig, source: Any) -> SourceWeights | None:
    """Read and check ``source`` for ``cfg`` before any network is built (so a bad source fails fast)."""
    if isinstance(source, SourceWeights):
        return source
    weights = read_source(arch, resolve_source(arch, source))
    if weights is not None:
        check_architecture(weights, cfg)
    return weights


def load_pretrained(model, arch: Architecture, cfg: ModelConfig, source: Any) -> convert.MergePlan | None:
    """Load ``source`` (or weights from :func:`read_weights`) into the kept part of ``model`` strictly;
    return what was loaded and dropped."""
    weights = read_weights(arch, cfg, source)
    if weights is None:
        return None
    origin = check_architecture(weights, cfg)
    run = weights.run_config
    same_slim = run is not None and (run.slim_from, run.slim_factor) == (cfg.slim_from, cfg.slim_factor)
    reference = reference_shapes(arch, model, cfg)
    slimmed = frozenset() if cfg.slim_from is None or same_slim else convert.slimmed_keys(model, reference)
    flat, _ = convert.replicate_grey_stem(weights.flat, convert.variable_shapes(model))  # 1-channel stems
    return convert.merge(model, flat, reference, classifier_key=arch.classifier_key, origin=origin,
                         target=describe(cfg), slimmed=slimmed)


def convert_file(arch: Architecture, path: Path, name: str | None = None) -> Path:
    """Check a torchvision-format file against the whole architecture and cache it in the Flax layout."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"The weights file {path} does not exist; check the path.")
    given, name = name, name or known_source_of(arch, path.name) or arch.source_name_of(path.name) or "imagenet"
    if name == "random":
        raise WeightsError("'random' names no weights; give another --source name.")
    if not SOURCE_NAME.fullmatch(name):
        raise WeightsError(f"--source takes a plain name (letters, digits, '.', '_' and '-', no path), got {name!r}.")
    known = arch.weights.get(known_source_of(arch, path.name) or "")
    expected = known and (torchvision_hash_prefix(path.name) or known.url_sha256)
    if expected:
        verify(path, expected, f"The torchvision file {path}", delete=False)
    weights = read_file(path, arch)
    chest_xray = "torchxrayvision" in weights.metadata.get("classes", "")  # a whole torchxrayvision model
    if chest_xray and given is None and name == "imagenet":
        raise WeightsError(f"{path} is a torchxrayvision model, not ImageNet weights; name it with --source "
                           f"({', '.join(n for n, h in arch.weights.items() if h.input == 'xrv') or 'a name'}).")
    reference = reference_shapes(arch)
    weights.flat, widened = convert.replicate_grey_stem(weights.flat, reference)
    plan = convert.plan_merge(reference, weights.flat, reference, classifier_key=arch.classifier_key)
    if plan.problems:
        full = describe(ModelConfig(arch=arch.name))
        raise WeightsError(convert.mismatch_message(plan, str(path), full, len(weights.flat)))
    hub = arch.weights.get(name)
    metadata = {"origin": path.name, "input": hub.input if hub else "xrv" if chest_xray else "imagenet"}
    if widened:
        metadata["stem"] = "1 channel replicated to 3 (W/3 each)"
    return save_converted(arch.name, name, weights.flat, metadata)


def save_converted(arch_name: str, name: str, flat: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    """Write flat Flax weights as the cached source ``name`` of ``arch_name`` (atomically)."""
    from safetensors.numpy import save_file

    target = converted_path(arch_name, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in flat.items()}, str(partial),
                  metadata={**metadata, "format": FLAX_FORMAT, "arch": arch_name, "source": name})
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)  # a failed write leaves nothing that looks converted
    return target


def torchvision_files(arch: Architecture) -> dict[str, str]:
    """File name of each torchvision URL of ``arch`` -> source name."""
    return {hub.torchvision_url.rsplit("/", 1)[-1]: name for name, hub in arch.weights.items()
            if hub.torchvision_url}


def known_source_of(arch: Architecture, filename: str) -> str | None:
    return torchvision_files(arch).get(filename)


def fetch(arch: Architecture, source: str = "imagenet", *, force: bool = False) -> Path:
    """Download (hub, else torchvision), verify and convert the ``source`` weights; return the cached file."""
    if not arch.weights:
        raise WeightsError(f"{arch.name} has no downloadable weights; use --pretrained random, a weights "
                           f"file or a ttlx run dir.")
    if source not in arch.weights:
        choices = ", ".join(sorted(arch.weights))
        raise WeightsError(f"{arch.name} has no downloadable '{source}' weights; choose {choices}.")
    target = converted_path(arch.name, source)
    if target.exists() and not force:
        return target
    return convert_file(arch, download(arch.name, source, arch.weights[source]), source)
