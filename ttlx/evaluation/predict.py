"""A trained run's predictions on image files (``ttlx predict``): new images, an external test set.

Every file is stored as the run's dataset stored its images (``ttlx.data.stored_form``: grayscale or RGB,
padded to a square where the dataset is, shrunk, re-encoded), then goes through the evaluation transform, so
the network sees it as it saw its own test images. The result is one CSV row per file
(:func:`ttlx.runs.predictions.write_file_predictions`), written whole once every file is scored: a file that is
missing or not an image stops the command with a sentence naming it, before anything is written.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from ttlx.errors import ConfigError, DataError
from ttlx.evaluation.trained_run import open_trained_run


def image_paths(paths) -> list[Path]:
    """Files as given (read whatever their suffix), and under each folder, recursively and sorted by path, the
    image files that ``ttlx prepare`` takes from a folder of classes (``ttlx.data.tables.is_image``)."""
    from ttlx.data.tables import IMAGE_SUFFIXES, is_image

    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(f for f in path.rglob("*") if is_image(f))
            if not inside:
                raise DataError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); pass image files or "
                                "a folder of them.")
            found += inside
        else:
            found.append(path)
    if not found:
        raise ConfigError("Pass at least one image file or folder.")
    return found


def predict_files(run_dir, paths, *, out=None, checkpoint: str = "best", batch_size: int = 32,
                  data_dir=None) -> tuple[Path, dict]:
    """Score image files with a run's network; writes the CSV (default ``RUN_DIR/predictions_files.csv``)
    and returns its path and a summary (files, and per class how many were predicted it)."""
    from ttlx.config import check_int
    from ttlx.data.augment import eval_transform, normalize
    from ttlx.metrics import probabilities
    from ttlx.runs.predictions import write_file_predictions

    check_int(batch_size, "--bs", 1)
    run = open_trained_run(run_dir)
    files = image_paths(paths)
    form = run.stored_form(data_dir)
    classes, multilabel = run.classes, run.multilabel
    size = run.model.image_size
    transform = eval_transform(size)
    missing = [path for path in files if not path.is_file()]
    if missing:  # before the network is built
        raise DataError(f"The image {missing[0]} does not exist ({len(missing)} of the {len(files)} files are "
                        "missing); check the paths.")
    path = Path(out) if out else run.path / "predictions_files.csv"
    if not path.parent.is_dir():
        raise ConfigError(f"The folder of --out {path} does not exist; create it or choose another path.")
    model = run.network(checkpoint)
    model.eval()
    from flax import nnx

    graphdef, state = nnx.split(model)
    chunk_size = min(batch_size, len(files))
    probs = []
    for start in range(0, len(files), chunk_size):
        chunk = files[start:start + chunk_size]
        images = normalize(np.stack([stored_image_file(path, size, form, transform) for path in chunk]),
                           run.input_convention)
        padded = np.concatenate([images, np.zeros((chunk_size - len(chunk), *images.shape[1:]), images.dtype)])
        logits = np.asarray(_logits(graphdef, state, padded), np.float32)[: len(chunk)]
        probs.append(probabilities(logits, multilabel))
    probs = np.concatenate(probs)
    write_file_predictions(path, files, probs, classes, multilabel)
    if multilabel:
        counts = {name: int(n) for name, n in zip(classes, (probs > 0.5).sum(axis=0))}
    else:
        counts = {name: int(n) for name, n in zip(classes, np.bincount(probs.argmax(axis=1), minlength=len(classes)))}
    return path, {"files": len(files), "predicted": counts, "multilabel": multilabel}


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, images):
    from flax import nnx

    return nnx.merge(graphdef, state)(images)


def image_files(paths, image_size: int, form, convention: str = "imagenet") -> np.ndarray:
    """Image files as the run's network saw its images: stored as its dataset was (``form``, a
    :class:`ttlx.data.stored_form.StoredForm`), then the eval transform and the normalisation of the run's
    input ``convention`` (ImageNet's, or a chest-X-ray source's)."""
    from ttlx.data.augment import eval_transform, normalize

    return normalize(np.stack([stored_image_file(path, image_size, form, eval_transform(image_size))
                               for path in paths]), convention)


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
