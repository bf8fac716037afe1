"""The analyses of a run dir: SVCCA against the network the run started from, and Grad-CAM overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ttlx.errors import ConfigError, DataError
from ttlx.evaluation.trained_run import open_trained_run


def svcca_of_run(run_dir, *, split: str = "test", images: int = 256, positions: int = 16,
                 batch_size: int = 32, keep: float = 0.99, out=None, data_dir=None, data=None,
                 checkpoint: str = "best") -> tuple[dict[str, dict], Path]:
    """SVCCA at every kept unit between the fine-tuned run and its start; writes svcca.json and svcca.png."""
    from ttlx.analysis.compare import compare_layers, write_svcca

    if images < 1 or positions < 1:
        raise ConfigError(f"--n and --positions must be at least 1, got {images} and {positions}.")
    run = open_trained_run(run_dir)
    loader = run.loader(split, batch_size=batch_size, data_dir=data_dir, data=data)
    results = compare_layers(run.network(checkpoint), run.starting_network(), loader,
                             positions=positions, limit=images, keep=keep)
    out = Path(out) if out else run.path / "analysis" / "svcca"
    title = f"SVCCA {run.path.name}: fine-tuned vs start ({split}, {images} images x {positions} positions)"
    write_svcca(results, out, title=title)
    return results, out


def gradcam_of_run(run_dir, *, split: str = "test", count: int = 8, paths=(), layer: str | None = None,
                   out=None, data_dir=None, data=None, checkpoint: str = "best") -> list[Path]:
    """Grad-CAM overlays of the first ``count`` images of a split, or of image files, with an index JSON.

    A run trained on volumes explains the first ``count`` windows of the split, one slice montage each
    (``ttlx.analysis.montage``).
    """
    from ttlx.analysis.gradcam import gradcam, peak_position, write_overlays
    from ttlx.evaluation.predict import image_files

    if count < 1:
        raise ConfigError(f"--n must be at least 1, got {count}.")
    run = open_trained_run(run_dir)
    if run.dataset.get("volumetric"):
        if paths:
            raise DataError(f"{run.path} was trained on volumes, so Grad-CAM explains windows of its dataset's "
                            "studies (--split), not image files.")
        return _gradcam_windows(run, split, count, layer, out, data_dir, data, checkpoint)
    if paths:
        images = image_files(paths, run.model.image_size, run.stored_form(data_dir), run.input_convention)
        ids, labels = [str(p) for p in paths], None
    else:
        loader = run.loader(split, batch_size=min(count, 32), data_dir=data_dir, data=data)
        images, ids, labels = first_examples(loader, count)
    model = run.network(checkpoint)
    cam = gradcam(model, images, layer=layer)
    classes, multilabel = run.dataset.get("classes"), run.multilabel
    out = Path(out) if out else run.path / "analysis" / ("gradcam_files" if paths else f"gradcam_{split}")
    written = write_overlays(images, cam, out, ids=ids, classes=classes, labels=labels, multilabel=multilabel,
                             convention=run.input_convention)
    peaks = peak_position(cam.maps)
    index = [{"id": ids[i], "png": p.name, "class": int(cam.target[i]), "peak_row_col": peaks[i].tolist(),
              **({"label": np.asarray(labels[i]).tolist()} if labels is not None else {})}
             for i, p in enumerate(written)]
    (out / "gradcam.json").write_text(json.dumps({"layer": cam.layer, "images": index}, indent=2) + "\n")
    return written


def _gradcam_windows(run, split, count, layer, out, data_dir, data, checkpoint) -> list[Path]:
    """Slice montages of the first ``count`` windows of a split of a run trained on volumes."""
    from ttlx.analysis.gradcam import gradcam, peak_position
    from ttlx.analysis.montage import write_montages

    loader = run.loader(split, batch_size=min(count, 32), data_dir=data_dir, data=data)
    starts = []
    windows, ids, labels = first_examples(_tap_starts(loader, starts), count)
    starts = np.concatenate(starts)[:count]
    cam = gradcam(run.network(checkpoint), windows, layer=layer)
    out = Path(out) if out else run.path / "analysis" / f"gradcam_{split}"
    written = write_montages(windows, cam, out, ids=ids, starts=starts, classes=run.dataset.get("classes"),
                             labels=labels)
    peaks = peak_position(cam.maps)
    index = [{"id": ids[i], "start": int(starts[i]), "png": p.name, "class": int(cam.target[i]),
              "peak_slice_row_col": [int(starts[i] + peaks[i][0]), *peaks[i][1:].tolist()],
              "label": int(labels[i])} for i, p in enumerate(written)]
    (out / "gradcam.json").write_text(json.dumps({"layer": cam.layer, "windows": index}, indent=2) + "\n")
    return written


def _tap_starts(loader, starts: list):
    """The loader's batches, noting each batch's window starts (first slice in the study) as they pass."""
    for batch in loader:
        starts.append(np.asarray(batch["start"])[: int(np.sum(batch["mask"]))])
        yield batch


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
