"""Study-level evaluation of a run on volumes: window probabilities aggregated per study.

A volume dataset is evaluated on consecutive non-overlapping windows (:mod:`ttlx.data.windows`). Each study's
probability is the maximum over its windows (the PENet reference), or their mean (``--aggregate mean``); for
more than two classes ``max`` takes each class's maximum and rescales the row to sum to 1. The metrics, the
bootstrap intervals (resampling studies), the confusion matrix and ``predictions_<split>.csv`` are then per
study, against the study's label; ``predictions_<split>_windows.csv`` keeps every window's row (``id`` the
study, ``start`` its first slice, ``label`` the window's label, then the probabilities).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttlx.errors import DataError

AGGREGATIONS = ("max", "mean")


@dataclass(frozen=True)
class StudyPredictions:
    """Per-study rows (``ids``, ``labels``, ``probs``) and the window predictions they came from."""

    ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    aggregate: str
    windows: int


def windows_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / f"predictions_{split}_windows.csv"


def aggregate_windows(ids: np.ndarray, probs: np.ndarray, how: str = "max",
                      multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(study ids in first-seen order, [S, C] study probabilities) from per-window ids and probabilities."""
    if how not in AGGREGATIONS:
        raise DataError(f"Unknown aggregation '{how}'; choose max or mean.")
    ids = np.asarray(ids).astype(str)
    studies, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)  # the split's order, as the windows came
    probs = np.asarray(probs, np.float64)
    out = np.zeros((len(studies), probs.shape[1]))
    if how == "mean":
        np.add.at(out, inverse, probs)
        out /= np.bincount(inverse, minlength=len(studies))[:, None]
    elif probs.shape[1] == 2 and not multilabel:  # a study is as positive as its most positive window
        positive = np.full(len(studies), -np.inf)
        np.maximum.at(positive, inverse, probs[:, 1])
        out = np.stack([1 - positive, positive], axis=1)
    else:
        out[:] = -np.inf
        np.maximum.at(out, inverse, probs)
        if not multilabel:
            out /= out.sum(axis=1, keepdims=True)
    return studies[order], out[order]


def per_study(run, info, cfg, predictions, probs: np.ndarray) -> StudyPredictions:
    """Aggregate one split's window predictions per study and write the per-window file (process 0)."""
    import jax

    from ttlx.data.windows import split_study_windows

    if predictions.ids is None:
        raise DataError("Study-level evaluation needs every window's study id, which only a single process sees; "
                        "run ttlx eval in one process.")
    data_dir = run.data_dir(cfg.data_dir)
    train = run.train
    window_ids, starts, study_labels = split_study_windows(train.dataset, data_dir, exp=train.exp, split=cfg.split,
                                                          sub=train.sub, window=run.model.window)
    if list(window_ids) != list(np.asarray(predictions.ids).astype(str)):
        raise DataError(f"The windows evaluated do not match the {cfg.split} split of '{info.name}'; prepare the "
                        "dataset again or pass the --data-dir the run was trained on.")
    how = getattr(cfg, "aggregate", "max")
    ids, study_probs = aggregate_windows(window_ids, probs, how, info.multilabel)
    labels = np.asarray([study_labels[i] for i in ids])
    if jax.process_index() == 0:
        _write_windows(windows_path(run.path, cfg.split), window_ids, starts, predictions.labels, probs, info.classes)
    return StudyPredictions(ids, labels, study_probs, how, len(window_ids))


def _write_windows(path: Path, ids, starts, labels, probs, classes) -> None:
    from ttlx.runs.run_dir import write_text_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "start", "label", *[f"prob_{c}" for c in classes]])
    for study, start, label, row in zip(ids, starts, labels, np.asarray(probs, np.float64), strict=True):
        writer.writerow([study, int(start), classes[int(label)], *[f"{p:.9g}" for p in row]])
    write_text_atomic(path, buffer.getvalue())
