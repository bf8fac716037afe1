"""The analyses of a run dir: SVCCA against the network the run started from, and Grad-CAM overlays."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttlx.config import ModelConfig, TrainConfig
from ttlx.errors import ConfigError, DataError, UserError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Run:
    """A run dir's configs and dataset record (name, classes, multilabel), as ``config.json`` holds them."""

    path: Path
    train: TrainConfig
    model: ModelConfig
    dataset: dict[str, Any]


def open_run(run_dir: str | Path) -> Run:
    from ttlx.runs.run_dir import RunDir

    path = Path(run_dir).absolute()  # orbax refuses relative checkpoint paths
    saved = RunDir(path).read_config()
    return Run(path, TrainConfig.from_dict(saved["train"]), ModelConfig.from_dict(saved["model"]),
               saved.get("dataset", {}))


def finetuned_network(run: Run, checkpoint: str = "best"):
    """The run's network with the weights of its best (or latest) checkpoint.

    Built with shapes only, then filled: the checkpoint holds every variable, so no random
    initialisation is compiled and thrown away.
    """
    from ttlx.models import get_architecture
    from ttlx.models.abstract import abstract_model
    from ttlx.runs.checkpoint import assign_model_state, load_model_state

    if checkpoint not in ("best", "latest"):
        raise ConfigError(f"Unknown checkpoint '{checkpoint}'; choose best or latest.")
    model = abstract_model(get_architecture(run.model.arch), run.model)
    assign_model_state(model, load_model_state(run.path, checkpoint)[1])
    return model


def starting_network(run: Run):
    """The network the run started from: its pretrained weights, and its seed for what they do not cover.

    Built by the same call as training, so a TF run's randomly initialised slim stages are its own.
    """
    from ttlx.models import create_model

    cfg, m = run.train, run.model
    return create_model(cfg.model, cfg.trunc, num_classes=m.num_classes, head=m.head, pretrained=cfg.pretrained,
                        layerwise=cfg.layerwise, image_size=m.image_size, slim_from=cfg.slim_from,
                        slim_factor=cfg.slim_factor, dtype=cfg.dtype, seed=cfg.seed)


def split_loader(run: Run, split: str, *, batch_size: int, data_dir=None, data=None):
    """An eval-transform loader of one split of the run's dataset and repeat."""
    if split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}'; choose one of {', '.join(SPLITS)}.")
    if data is None:
        from ttlx.data import pipeline as data
    return data.make_loader(run.train.dataset, data_dir or run.train.data_dir, exp=run.train.exp, split=split,
                            sub=run.train.sub, batch_size=batch_size, image_size=run.model.image_size,
                            train=False, num_workers=run.train.num_workers)


def svcca_of_run(run_dir, *, split: str = "test", images: int = 256, positions: int = 16,
                 batch_size: int = 32, keep: float = 0.99, out=None, data_dir=None, data=None,
                 checkpoint: str = "best") -> tuple[dict[str, dict], Path]:
    """SVCCA at every kept unit between the fine-tuned run and its start; writes svcca.json and svcca.png."""
    from ttlx.analysis.compare import compare_layers, write_svcca

    if images < 1 or positions < 1:
        raise ConfigError(f"--n and --positions must be at least 1, got {images} and {positions}.")
    run = open_run(run_dir)
    loader = split_loader(run, split, batch_size=batch_size, data_dir=data_dir, data=data)
    results = compare_layers(finetuned_network(run, checkpoint), starting_network(run), loader,
                             positions=positions, limit=images, keep=keep)
    out = Path(out) if out else run.path / "analysis" / "svcca"
    title = f"SVCCA {run.path.name}: fine-tuned vs start ({split}, {images} images x {positions} positions)"
    write_svcca(results, out, title=title)
    return results, out


def gradcam_of_run(run_dir, *, split: str = "test", count: int = 8, paths=(), layer: str | None = None,
                   out=None, data_dir=None, data=None, checkpoint: str = "best") -> list[Path]:
    """Grad-CAM overlays of the first ``count`` images of a split, or of image files, with an index JSON."""
    from ttlx.analysis.gradcam import gradcam, peak_position, write_overlays

    if count < 1:
        raise ConfigError(f"--n must be at least 1, got {count}.")
    run = open_run(run_dir)
    if paths:
        form = stored_form(run, data_dir)
        images, ids, labels = image_files(paths, run.model.image_size, form), [str(p) for p in paths], None
    else:
        loader = split_loader(run, split, batch_size=min(count, 32), data_dir=data_dir, data=data)
        images, ids, labels = first_examples(loader, count)
    model = finetuned_network(run, checkpoint)
    cam = gradcam(model, images, layer=layer)
    classes = run.dataset.get("classes")
    multilabel = bool(run.dataset.get("multilabel", False))
    out = Path(out) if out else run.path / "analysis" / ("gradcam_files" if paths else f"gradcam_{split}")
    written = write_overlays(images, cam, out, ids=ids, classes=classes, labels=labels, multilabel=multilabel)
    peaks = peak_position(cam.maps)
    index = [{"id": ids[i], "png": p.name, "class": int(cam.target[i]), "peak_row_col": peaks[i].tolist(),
              **({"label": np.asarray(labels[i]).tolist()} if labels is not None else {})}
             for i, p in enumerate(written)]
    (out / "gradcam.json").write_text(json.dumps({"layer": cam.layer, "images": index}, indent=2) + "\n")
    return written


def first_examples(loader, count: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(images, ids, labels) of the first ``count`` real examples of an eval loader."""
    images, ids, labels = [], [], []
    for batch in loader:
        real = int(np.sum(batch["mask"]))
        images.append(batch["image"][:real])
        ids += [i.decode() if isinstance(i, bytes) else str(i) for i in batch["id"][:real]]
        labels.append(batch["label"][:real])
        if len(ids) >= count:
            break
    if not ids:
        raise DataError("The split holds no images; choose another --split.")
    return np.concatenate(images)[:count], ids[:count], np.concatenate(labels)[:count]


def image_files(paths, image_size: int, form) -> np.ndarray:
    """Image files as the run's network saw its images: stored as its dataset was (``form``, a
    :class:`ttlx.data.stored_form.StoredForm`), then the eval transform and ImageNet normalisation."""
    from ttlx.data.augment import eval_transform, normalize

    return normalize(np.stack([stored_image_file(path, image_size, form, eval_transform(image_size))
                               for path in paths]))


def stored_image_file(path, image_size: int, form, transform=None) -> np.ndarray:
    """One image file through ``form.store`` and the eval transform, as uint8 [S, S, 3]; a DataError naming
    the file when it is missing or not an image."""
    from ttlx.data.augment import eval_transform
    from ttlx.data.images import BadImage

    path = Path(path)
    if not path.is_file():
        raise DataError(f"The image {path} does not exist; check the path.")
    try:
        return (transform or eval_transform(image_size))(form.store(path))
    except BadImage as err:
        raise DataError(f"{path} is not a readable image ({err}); pass PNG or JPEG files.") from None


def stored_form(run: Run, data_dir=None):
    """How the run's dataset stored its images: from ``config.json``, or (runs trained before ttlx recorded
    it) from the prepared dataset; a DataError saying what to pass when neither is there."""
    from ttlx.data.stored_form import StoredForm

    if run.dataset.get("stored"):
        return StoredForm.from_dict(run.dataset["stored"])
    from ttlx.data import pipeline

    try:
        stored = pipeline.dataset_info(run.train.dataset, data_dir or run.train.data_dir).stored
    except (UserError, KeyError) as err:
        raise DataError(f"{run.path} does not record how its dataset stored the images, and the prepared "
                        f"dataset is not at hand ({err}); pass --data-dir with the prepared "
                        f"'{run.train.dataset}'.") from None
    return StoredForm.from_dict(stored)
