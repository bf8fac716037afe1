"""Classification metrics from scikit-learn, and bootstrap confidence intervals.

AUPRC is given two ways: ``auprc`` is scikit-learn's average precision, ``auprc_trapz`` the trapezoidal
area under ``precision_recall_curve`` that the paper reports. Per-class values are one-vs-rest; macro
values average the classes that have both positives and negatives. For two classes, ``positive`` gives
the values of class 1 (the paper's BIMCV convention). Multi-label sets (CheXpert) are scored per finding
at a 0.5 threshold.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

from ttlx import settings

SUMMARY = ("accuracy", "balanced_accuracy", "auroc", "auprc", "auprc_trapz")


def probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if multilabel:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def one_vs_rest(labels: np.ndarray, num_classes: int, multilabel: bool) -> np.ndarray:
    """[N, C] 0/1 targets."""
    if multilabel:
        return (np.asarray(labels) > 0.5).astype(np.int64)
    return np.eye(num_classes, dtype=np.int64)[np.asarray(labels, dtype=np.int64)]


def class_scores(target: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUROC, average precision and trapezoidal AUPRC of one class; NaN without both outcomes."""
    if target.min() == target.max():
        return {"auroc": float("nan"), "auprc": float("nan"), "auprc_trapz": float("nan")}
    precision, recall, _ = skm.precision_recall_curve(target, score)
    fpr, tpr, _ = skm.roc_curve(target, score, drop_intermediate=False)
    return {
        "auroc": float(skm.auc(fpr, tpr)),  # = roc_auc_score, at half its cost in the bootstrap loop
        "auprc": float(skm.average_precision_score(target, score)),
        "auprc_trapz": float(skm.auc(recall, precision)),
    }


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str] | tuple[str, ...],
                           multilabel: bool = False) -> dict:
    """Accuracy, balanced accuracy, per-class and macro AUROC/AUPRC of predictions ``probs`` [N, C]."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    targets = one_vs_rest(labels, len(classes), multilabel)
    per_class = {name: {**class_scores(targets[:, c], probs[:, c]), "support": int(targets[:, c].sum())}
                 for c, name in enumerate(classes)}
    out = {"num_examples": int(len(labels)), **accuracies(targets, probs, multilabel), "per_class": per_class}
    for key in ("auroc", "auprc", "auprc_trapz"):
        out[key] = _nanmean([v[key] for v in per_class.values()])
    if len(classes) == 2 and not multilabel:
        out["positive"] = {"class": classes[1], **{k: per_class[classes[1]][k] for k in ("auroc", "auprc",
                                                                                       "auprc_trapz")}}
    return out


def accuracies(targets: np.ndarray, probs: np.ndarray, multilabel: bool) -> dict[str, float]:
    if multilabel:
        predicted = (probs > 0.5).astype(np.int64)
        balanced = [skm.balanced_accuracy_score(targets[:, c], predicted[:, c])
                    for c in range(targets.shape[1]) if targets[:, c].min() != targets[:, c].max()]
        return {"accuracy": float((predicted == targets).mean()), "balanced_accuracy": _nanmean(balanced)}
    truth, predicted = targets.argmax(axis=1), probs.argmax(axis=1)
    with warnings.catch_warnings():  # a class absent from a bootstrap sample is expected
        warnings.simplefilter("ignore")
        balanced = skm.balanced_accuracy_score(truth, predicted)
    return {"accuracy": float(skm.accuracy_score(truth, predicted)), "balanced_accuracy": float(balanced)}


def confusion_matrix(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    num_classes = probs.shape[1]
    return skm.confusion_matrix(np.asarray(labels), probs.argmax(axis=1), labels=list(range(num_classes)))


def resampled_metrics(labels: np.ndarray, probs: list[np.ndarray], classes, multilabel: bool, *,
                      resamples: int, seed: int, workers: int | None = None):
    """For each of ``resamples`` resamplings of the examples (with replacement, from ``seed``), the summary
    metrics (:data:`SUMMARY`) of every array in ``probs`` on that same resampling.

    The resamplings are drawn here, in order, whatever the number of ``workers`` (default:
    :func:`bootstrap_workers`), so the values are the same with one process or several: worker processes
    (joblib) only score them. Why: scikit-learn spends most of a resampling's time checking its inputs
    (about 30 ms for 10 classes), and a 1,000-resample interval took half a minute on one core.
    """
    labels = np.asarray(labels)
    probs = [np.asarray(p) for p in probs]
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = (rng.integers(0, n, size=n) for _ in range(resamples))
    workers = bootstrap_workers(resamples * len(probs)) if workers is None else workers
    if workers <= 1:
        yield from _score_resamplings(labels, probs, classes, multilabel, draws)
        return
    import itertools

    from joblib import Parallel, delayed

    size = max(1, -(-resamples // (4 * workers)))
    chunks = iter(lambda: list(itertools.islice(draws, size)), [])
    with Parallel(n_jobs=workers, return_as="generator") as parallel:
        for scored in parallel(delayed(_scored_list)(labels, probs, classes, multilabel, chunk) for chunk in chunks):
            yield from scored


def _score_resamplings(labels, probs, classes, multilabel, draws):
    import sklearn

    # the inputs were checked by the full-sample metrics; skip sklearn's per-call validation
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for index in draws:
            yield [{key: m[key] for key in SUMMARY}
                   for m in (classification_metrics(labels[index], p[index], classes, multilabel) for p in probs)]


def _scored_list(labels, probs, classes, multilabel, draws) -> list:
    return list(_score_resamplings(labels, probs, classes, multilabel, draws))


def bootstrap_workers(scorings: int) -> int:
    """Processes that score resamplings: ``$TTLX_BOOTSTRAP_WORKERS`` if set, else one per available core
    (at most 8) once there are at least 200 scorings, where the workers' start (about a second) pays."""
    setting = settings.bootstrap_workers()
    if setting is not None:
        return setting
    if scorings < 200:
        return 1
    return max(1, min(settings.schedulable_cpus(), 8))


def bootstrap_intervals(labels: np.ndarray, probs: np.ndarray, classes, multilabel: bool = False, *,
                        resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals of the summary metrics over ``resamples`` resamplings of the examples."""
    values = {key: [] for key in SUMMARY}
    for (sample,) in resampled_metrics(labels, [probs], classes, multilabel, resamples=resamples, seed=seed):
        for key in SUMMARY:
            values[key].append(sample[key])
    tail = 100 * (1 - level) / 2
    return {key: [float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))]
            for key, v in values.items() if not np.all(np.isnan(v))}


def paired_bootstrap(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, classes,
                     multilabel: bool = False, *, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, dict[str, float | list[float]]]:
    """B minus A for each summary metric of two models' predictions on the same images, with a paired
    percentile interval and a two-sided bootstrap p-value.

    Each resampling draws one set of images and scores both models on it, so the interval reflects how
    the two differ on the same images rather than how each varies alone. The p-value is twice the
    share of resampled differences on the far side of zero from the observed one (at most 1, and at
    least ``1 / resamples``): a percentile bootstrap test, not DeLong's test for AUROC.
    """
    labels, probs_a, probs_b = np.asarray(labels), np.asarray(probs_a), np.asarray(probs_b)
    a = classification_metrics(labels, probs_a, classes, multilabel)
    b = classification_metrics(labels, probs_b, classes, multilabel)
    differences = {key: [] for key in SUMMARY}
    for sample_a, sample_b in resampled_metrics(labels, [probs_a, probs_b], classes, multilabel,
                                                resamples=resamples, seed=seed):
        for key in SUMMARY:
            differences[key].append(sample_b[key] - sample_a[key])
    tail = 100 * (1 - level) / 2
    out = {}
    for key in SUMMARY:
        d = np.asarray(differences[key])
        d = d[~np.isnan(d)]
        observed = b[key] - a[key]
        if np.isnan(observed) or not len(d):
            continue
        far_side = np.mean(d <= 0) if observed > 0 else np.mean(d >= 0)
        out[key] = {"a": a[key], "b": b[key], "difference": observed,
                    "ci": [float(np.percentile(d, tail)), float(np.percentile(d, 100 - tail))],
                    "p_value": float(min(1.0, max(2 * far_side, 1 / len(d))))}
    return out


def epoch_metrics(labels: np.ndarray, probs: np.ndarray, num_classes: int,
                  multilabel: bool) -> dict[str, float]:
    """The validation accuracy and macro AUROC logged after every epoch."""
    targets = one_vs_rest(labels, num_classes, multilabel)
    aurocs = [skm.roc_auc_score(targets[:, c], probs[:, c]) for c in range(num_classes)
              if targets[:, c].min() != targets[:, c].max()]
    accuracy = accuracies(targets, probs, multilabel)["accuracy"]
    return {"val_accuracy": accuracy, "val_auroc": _nanmean(aurocs)}


def _nanmean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
