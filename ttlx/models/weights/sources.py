"""Source domains: the paper's ``chexpert`` source, torchxrayvision's public chest-X-ray weights, and the
table ``ttlx weights list`` shows.

The paper's CheXpert weights were never released. ``--pretrained chexpert`` therefore means, in order:
the ``chexpert`` source of the architecture made by ``ttlx weights import chexpert RUN_DIR`` (a ttlx run
pretrained on CheXpert as the reference did); for densenet121 with nothing imported, torchxrayvision's
CheXpert-only DenseNet121 (``xrv-chex``), announced and recorded as a substitute; otherwise one sentence
naming the ways out. Never a silent switch of architecture or source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ttlx.errors import WeightsError
from ttlx.models.architecture import Architecture, HubWeights

CHEXPERT = "chexpert"
CHEXPERT_SUBSTITUTE = "xrv-chex"
SUBSTITUTE_NOTE = ("--pretrained chexpert: the paper's CheXpert weights were never released, so {arch} starts "
                   "from torchxrayvision's CheXpert-only DenseNet121 ({name}: trained on CheXpert alone, grey "
                   "input in [-1024, 1024]) instead; `ttlx weights import chexpert RUN_DIR` makes your own "
                   "CheXpert-pretrained run the chexpert source.")
# input conventions by name: what the weights were trained on (recorded with the source and in config.json)
INPUT_CONVENTIONS = {
    "imagenet": "RGB, x/255 then ImageNet mean/std",
    "xrv": "grey (1 channel, replicated to 3 as W/3), x/255 scaled to [-1024, 1024], no mean/std",
}

_XRV_HUB = "torchxrayvision/"
_XRV_RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
_XRV_SEED0 = "-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
XRV_ORIGIN = "torchxrayvision (mlmed)"  # release v1 files, mirrored on the hub; checked against 1.5.7
XRV_LICENCE = "Apache-2.0"  # the code and the hub model cards
# Facts checked against torchxrayvision 1.5.7 (models.py: URLs, 18 outputs, in_channels=1, normalize to
# [-1024, 1024]) and the hub pages of torchxrayvision/<name>: pinned revisions that hold model.pt, and the
# SHA-256 the hub publishes where the pages show it. Where no SHA-256 is pinned here the hub's published
# one is still checked on download; a pin is enforced once set.
XRV_CHEX = HubWeights(
    _XRV_HUB + "densenet121-res224-chex", "model.pt", torchvision_url=_XRV_RELEASE + "chex" + _XRV_SEED0,
    revision="66ba023a17ca0315462d8db05c3954d4f4aaf92a",  # "config file", after "model file"
    sha256=None,  # UNVERIFIED: the hub's SHA-256 for this file was not found; the hub's own is checked
    origin=XRV_ORIGIN, trained_on="CheXpert only (224 px)", licence=XRV_LICENCE, input="xrv")
XRV_ALL = HubWeights(
    _XRV_HUB + "densenet121-res224-all", "model.pt",
    torchvision_url=_XRV_RELEASE + "nih-pc-chex-mimic_ch-google-openi-kaggle" + _XRV_SEED0,
    revision="588eadcc6a744da71f8dce768bc974ec629443f5",
    sha256="56524913dd16a906422e8d8b66a7a5c46be1d82eb7ac012d8103776f1aa68899",  # hub LFS pointer, 28,382,008 B
    origin=XRV_ORIGIN, trained_on="NIH, PadChest, CheXpert, MIMIC-CXR, Google, OpenI, RSNA (224 px)",
    licence=XRV_LICENCE, input="xrv")
XRV_RESNET50 = HubWeights(
    _XRV_HUB + "resnet50-res512-all", "model.pt",
    torchvision_url=_XRV_RELEASE + "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt",
    revision="6f3c415eaa41bf7b6e53d42e41aaf1467ed87c1e",
    sha256=None,  # UNVERIFIED: not found; the hub's published SHA-256 is checked on download
    origin=XRV_ORIGIN, trained_on="PadChest, NIH, RSNA, SIIM, VinDr (512 px; no CheXpert)",
    licence=XRV_LICENCE, input="xrv")
CHEST_XRAY_SOURCES = {
    "densenet121": {"xrv-chex": XRV_CHEX, "xrv-all": XRV_ALL},
    "resnet50": {"xrv-res512": XRV_RESNET50},
}


def chexpert_source(arch: Architecture) -> tuple[str, str | None]:
    """(source name, note) that ``--pretrained chexpert`` means for ``arch``; the note says what substitutes."""
    from ttlx.models.weights.pretrained import cached_names

    if CHEXPERT in cached_names(arch.name):
        return CHEXPERT, None
    if CHEXPERT_SUBSTITUTE in arch.weights:
        return CHEXPERT_SUBSTITUTE, SUBSTITUTE_NOTE.format(arch=arch.name, name=CHEXPERT_SUBSTITUTE)
    raise WeightsError(
        f"--pretrained chexpert: the paper's CheXpert weights for {arch.name} were never released and none "
        f"are imported; pretrain {arch.name} on CheXpert with ttlx and run `ttlx weights import chexpert "
        f"RUN_DIR`, use --model densenet121 (torchxrayvision's CheXpert weights), or choose another --pretrained.")


def source_record(arch: Architecture, pretrained: str, channels: int | None = None) -> dict[str, Any]:
    """What a run's ``pretrained`` resolved to, for its config.json: name, resolved source, input convention
    and a note where a substitute stands in or a grey source meets colour images (``channels`` 3)."""
    from ttlx.models.weights.pretrained import converted_path

    record: dict[str, Any] = {"name": pretrained, "resolved": pretrained, "input": "imagenet"}
    if pretrained == "random":
        return record
    notes = []
    if pretrained == CHEXPERT:
        record["resolved"], note = chexpert_source(arch)
        notes += [note] if note else []
    hub, path = arch.weights.get(record["resolved"]), Path(str(record["resolved"])).expanduser()
    if hub is not None:
        record["input"] = hub.input
    elif (path / "config.json").is_file():  # a run dir: the convention its own source gave it
        record["input"] = json.loads((path / "config.json").read_text()).get("source", {}).get("input", "imagenet")
    elif path.is_file() and path.suffix != ".safetensors":  # a torch file: a torchxrayvision model is grey
        from ttlx.models.weights.torchmodule import read_module_file

        record["input"] = "xrv" if any("torchxrayvision" in c for c in read_module_file(path)[1]) else "imagenet"
    else:
        cached = path if path.suffix == ".safetensors" and path.is_file() else converted_path(arch.name, str(path))
        record["input"] = cached_metadata(cached).get("input", "imagenet") if cached.is_file() else "imagenet"
    if record["input"] == "xrv" and channels == 3:
        notes.append(f"{record['resolved']} was trained on grey chest X-rays and this dataset is in colour: each "
                     f"channel is scaled to [-1024, 1024] and the replicated 1-channel stem sees their mean, "
                     f"i.e. the grey image.")
    if notes:
        record["note"] = " ".join(notes)
    return record


def cached_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        return dict(handle.metadata() or {})


def import_run(run_dir: Path, name: str = CHEXPERT) -> tuple[str, Path]:
    """Make a trained run's backbone the ``name`` source of its architecture (its classifier is dropped);
    return (architecture, cached file)."""
    from ttlx.models import get_architecture
    from ttlx.models.weights.pretrained import SOURCE_NAME, read_run_dir, save_converted

    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "config.json").is_file():
        raise WeightsError(f"{run_dir} is not a ttlx run dir (it has no config.json); give the run dir that "
                           f"`ttlx train` wrote.")
    if not SOURCE_NAME.fullmatch(name) or name == "random":
        raise WeightsError(f"The source name takes letters, digits, '.', '_' and '-' (no path), got {name!r}.")
    weights = read_run_dir(run_dir)
    run = weights.run_config
    if run.layerwise or run.trunc != -1 or run.slim_from is not None:
        raise WeightsError(f"{run_dir} trained a cut or slimmed {run.arch}; a source must be the whole network, "
                           f"so import a run trained with --trunc -1.")
    head = get_architecture(run.arch).classifier_key + "."
    flat = {k: np.asarray(v, np.float32) for k, v in weights.flat.items() if not k.startswith(head)}
    config = json.loads((run_dir / "config.json").read_text())
    metadata = {"origin": f"ttlx run {run_dir.name}", "input": config.get("source", {}).get("input", "imagenet"),
                "trained_on": str(config.get("dataset", {}).get("name", "?"))}
    return run.arch, save_converted(run.arch, name, flat, metadata)


def source_rows(arch: Architecture) -> list[dict[str, Any]]:
    """One row per named source of ``arch``: origin, trained on, licence, input convention, cached."""
    from ttlx.models.weights.pretrained import converted_path, source_names

    rows = []
    for name in source_names(arch):
        hub, path = arch.weights.get(name), converted_path(arch.name, name)
        meta = cached_metadata(path) if hub is None and path.exists() else {}
        rows.append({
            "model": arch.name, "source": name,
            "hub": hub.repo_id if hub else "(converted locally)",
            "origin": hub.origin if hub else meta.get("origin", "a local file"),
            "trained_on": hub.trained_on if hub else meta.get("trained_on", "?"),
            "licence": hub.licence if hub else "(yours)",
            "input": hub.input if hub else meta.get("input", "imagenet"),
            "top1": hub.top1 if hub else None, "cached": path.exists()})
    if CHEXPERT not in {r["source"] for r in rows} and CHEXPERT_SUBSTITUTE in arch.weights:
        rows.append({"model": arch.name, "source": CHEXPERT, "hub": f"= {CHEXPERT_SUBSTITUTE} until imported",
                     "origin": "the paper's weights were never released", "trained_on": "CheXpert",
                     "licence": XRV_LICENCE, "input": "xrv", "top1": None,
                     "cached": converted_path(arch.name, CHEXPERT_SUBSTITUTE).exists()})
    return rows

