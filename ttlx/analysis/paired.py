"""Two runs compared on the same images: the difference of each metric with a paired bootstrap interval.

The paper reports each method as a mean over three repeats; on one repeat's test split, whether TTL-2 beats
FTL is a question about the same images scored by two networks. ``paired_comparison`` reads the two runs'
``predictions_<split>.csv`` (written by ``ttlx eval``, :mod:`ttlx.runs.predictions`), checks that they hold the
same images with the same labels, and resamples the images once for both
(:func:`ttlx.metrics.paired_bootstrap`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.errors import DataError, UserError


def predictions_of(source: str | Path, split: str) -> tuple[Path, dict[str, np.ndarray]]:
    """(path, columns) of a run dir's ``predictions_<split>.csv``, or of a predictions CSV named directly."""
    from ttlx.runs.predictions import predictions_path, read_predictions

    source = Path(source)
    path = source if source.is_file() else predictions_path(source, split)
    if not path.is_file():
        if not source.exists():
            raise UserError(f"{source} does not exist; pass a run dir or a predictions CSV.")
        raise UserError(f"{source} has no {path.name}; run `ttlx eval {source} --split {split}` first.")
    try:
        columns = read_predictions(path)
    except (ValueError, StopIteration, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a predictions CSV written by ttlx eval ({err}); evaluate the run "
                        "again.") from err
    if "id" not in columns or not any(name.startswith("prob_") for name in columns):
        raise DataError(f"{path} is not a predictions CSV written by ttlx eval (no id or prob_ columns); "
                        "evaluate the run again.")
    return path, columns


def labels_and_probabilities(columns: dict[str, np.ndarray]) -> tuple[list[str], bool, np.ndarray, np.ndarray]:
    """(classes, multilabel, labels as the metrics take them, probabilities [N, C]) of a predictions table."""
    classes = [name[len("prob_"):] for name in columns if name.startswith("prob_")]
    probs = np.stack([columns[f"prob_{name}"] for name in classes], axis=1)
    multilabel = "label" not in columns
    if multilabel:
        labels = np.stack([columns[f"label_{name}"] for name in classes], axis=1)
    else:
        index = {name: c for c, name in enumerate(classes)}
        unknown = sorted(set(columns["label"]) - set(index))
        if unknown:
            raise DataError(f"The predictions' labels include {unknown[0]!r}, which has no prob_ column; "
                            "evaluate the run again.")
        labels = np.asarray([index[name] for name in columns["label"]], dtype=np.int64)
    return classes, multilabel, labels, probs


def paired_comparison(run_a: str | Path, run_b: str | Path, *, split: str = "test", resamples: int = 1000,
                      seed: int = 0) -> dict:
    """B minus A for every summary metric, with 95% paired bootstrap intervals and p-values."""
    from ttlx.config import check_int
    from ttlx.evaluation.trained_run import check_split
    from ttlx.metrics import paired_bootstrap

    check_split(split)
    check_int(resamples, "--bootstrap", 1)
    path_a, a = predictions_of(run_a, split)
    path_b, b = predictions_of(run_b, split)
    if len(a["id"]) != len(b["id"]) or not np.array_equal(a["id"], b["id"]):
        raise UserError(f"{path_a} and {path_b} hold different images ({len(a['id'])} and {len(b['id'])} rows); "
                        "compare runs evaluated on the same split of the same repeat (--exp) and dataset.")
    classes_a, multilabel, labels, probs_a = labels_and_probabilities(a)
    classes_b, _, labels_b, probs_b = labels_and_probabilities(b)
    if classes_a != classes_b:
        raise UserError(f"{path_a} and {path_b} score different classes ({', '.join(classes_a)} against "
                        f"{', '.join(classes_b)}); compare runs of the same dataset.")
    if not np.array_equal(labels, labels_b):
        raise UserError(f"{path_a} and {path_b} give the same images different labels; compare runs of the "
                        "same prepared dataset.")
    return {"split": split, "a": str(path_a), "b": str(path_b), "num_examples": int(len(labels)),
            "resamples": resamples, "seed": seed,
            "metrics": paired_bootstrap(labels, probs_a, probs_b, classes_a, multilabel, resamples=resamples,
                                        seed=seed)}


def p_text(p: float, resamples: int) -> str:
    """A bootstrap p-value as text: ``<= 1/resamples`` where no resampled difference crossed zero."""
    return f"<= {p:.3g}" if p * resamples <= 1 else f"{p:.3g}"
