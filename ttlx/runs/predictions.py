"""Per-image predictions of an evaluation, as a CSV file next to its metrics.

``ttlx eval`` (and ``ttlx train --test``) writes ``predictions_<split>.csv`` in the run dir: one row per image
of the split, in the split file's order, so that two runs evaluated on the same split can be compared image
by image (a paired test such as DeLong's, calibration, the images a truncated network gets wrong that the
full one gets right) without running the networks again.

Columns, single-label datasets: ``id`` (the dataset's own image id, as in the split files), ``label`` and
``predicted`` (class names; ``predicted`` is the most probable class), then ``prob_<class>`` for every
class (softmax probabilities). Multi-label datasets: ``id``, then ``label_<class>`` (1 or 0, as the metrics
count it) and ``prob_<class>`` (sigmoid) for every class. Probabilities are written with 9 significant
digits (``repr`` of a float32 round trip holds).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ttlx.runs.run_dir import write_text_atomic


def predictions_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / f"predictions_{split}.csv"


def prediction_rows(ids, labels, probs, classes, multilabel: bool) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the predictions table; ``probs`` [N, C] are probabilities, ``labels`` what the
    metrics take (class indices, or [N, C] targets)."""
    ids, probs, classes = np.asarray(ids).astype(str), np.asarray(probs, np.float64), list(classes)
    labels = np.asarray(labels)
    if not len(ids) == len(labels) == len(probs) or probs.shape[1:] != (len(classes),):
        raise ValueError(f"{len(ids)} ids, {len(labels)} labels and probabilities of shape {probs.shape} "
                         f"do not describe the same images of {len(classes)} classes.")
    prob_columns = [f"prob_{name}" for name in classes]
    text = [_probability_text(row) for row in probs]
    if multilabel:
        targets = (labels > 0.5).astype(int)
        header = ["id", *[f"label_{name}" for name in classes], *prob_columns]
        rows = [[i, *map(str, target), *p] for i, target, p in zip(ids, targets, text)]
    else:
        header = ["id", "label", "predicted", *prob_columns]
        predicted = probs.argmax(axis=1)
        rows = [[i, classes[int(label)], classes[int(best)], *p]
                for i, label, best, p in zip(ids, labels, predicted, text)]
    return header, rows


def write_predictions(path: Path, ids, labels, probs, classes, multilabel: bool) -> Path:
    """Write the predictions table to ``path`` whole or not at all."""
    return _write_table(path, *prediction_rows(ids, labels, probs, classes, multilabel))


def write_file_predictions(path: Path, files, probs, classes, multilabel: bool) -> Path:
    """``ttlx predict``'s table: ``file``, then (single-label) ``predicted``, then ``prob_<class>`` for every
    class; written whole or not at all."""
    probs, classes = np.asarray(probs, np.float64), list(classes)
    if len(files) != len(probs) or probs.shape[1:] != (len(classes),):
        raise ValueError(f"{len(files)} files and probabilities of shape {probs.shape} do not describe the same "
                         f"images of {len(classes)} classes.")
    header = ["file", *([] if multilabel else ["predicted"]), *[f"prob_{name}" for name in classes]]
    rows = [[str(file), *([] if multilabel else [classes[int(row.argmax())]]), *_probability_text(row)]
            for file, row in zip(files, probs)]
    return _write_table(path, header, rows)


def _probability_text(row) -> list[str]:
    return [f"{p:.9g}" for p in row]


def _write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A CSV written whole or not at all (``ttlx.runs.run_dir.write_text_atomic``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return path


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """A predictions CSV (``ttlx eval``'s or ``ttlx predict``'s) as columns: ``id`` or ``file`` (and ``label``,
    ``predicted``) as strings, the rest as numbers."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        columns = list(zip(*reader)) or [()] * len(header)
    text = {"id", "file", "label", "predicted"}
    return {name: np.asarray(values, dtype=str if name in text else np.float64)
            for name, values in zip(header, columns)}
