"""Evaluation: scikit-learn metrics in the paper's conventions, bootstrap intervals, and `evaluate_run`
on a finished tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_data import FakeData
from sklearn import metrics as skm

from ttlx.config import EvalConfig
from ttlx.errors import ConfigError, UserError
from ttlx.evaluation.evaluate import evaluate_run
from ttlx.metrics import bootstrap_intervals, classification_metrics, epoch_metrics, probabilities
from ttlx.runs.predictions import prediction_rows, read_predictions, write_predictions
from ttlx.runs.run_dir import RunDir

LABELS = np.array([0, 0, 1, 1, 1, 2, 2, 0])
PROBS = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4],
                  [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.6, 0.1, 0.3]])


def test_multiclass_metrics_follow_sklearn_one_vs_rest():
    out = classification_metrics(LABELS, PROBS, ["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(6 / 8)
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(LABELS, PROBS.argmax(1)))
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(LABELS, PROBS, multi_class="ovr", average="macro"))
    for c, name in enumerate("abc"):
        target = (LABELS == c).astype(int)
        precision, recall, _ = skm.precision_recall_curve(target, PROBS[:, c])
        assert out["per_class"][name]["auprc"] == pytest.approx(skm.average_precision_score(target, PROBS[:, c]))
        assert out["per_class"][name]["auprc_trapz"] == pytest.approx(skm.auc(recall, precision))
        assert out["per_class"][name]["support"] == int(target.sum())
    assert "positive" not in out


def test_binary_metrics_report_the_positive_class_and_both_auprc_conventions():
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.6, 0.35, 0.8, 0.7, 0.2])
    out = classification_metrics(labels, np.stack([1 - scores, scores], 1), ["negative", "positive"])
    assert out["positive"]["class"] == "positive"
    assert out["positive"]["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores)) == pytest.approx(8 / 9)
    assert out["positive"]["auprc"] == pytest.approx(skm.average_precision_score(labels, scores))
    # the trapezoidal area (the paper's AUPRC) is not average precision on this example
    assert out["positive"]["auprc_trapz"] != pytest.approx(out["positive"]["auprc"], abs=1e-3)


def test_multilabel_metrics_score_each_finding_at_one_half():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.3, 0.6], [0.2, 0.8]])
    out = classification_metrics(labels, probs, ["x", "y"], multilabel=True)
    assert out["accuracy"] == pytest.approx(6 / 8)
    assert out["per_class"]["x"]["auroc"] == pytest.approx(skm.roc_auc_score(labels[:, 0], probs[:, 0]))
    assert epoch_metrics(labels, probs, 2, True)["val_accuracy"] == pytest.approx(6 / 8)


def test_a_class_without_positives_is_left_out_of_the_macro_mean():
    out = classification_metrics(np.array([0, 1, 0, 1]), np.array([[0.8, 0.1, 0.1]] * 2 + [[0.1, 0.8, 0.1]] * 2),
                                 ["a", "b", "c"])
    assert np.isnan(out["per_class"]["c"]["auroc"])
    assert out["auroc"] == pytest.approx(np.mean([out["per_class"][k]["auroc"] for k in "ab"]))


def test_bootstrap_intervals_are_reproducible_and_bracket_the_estimate():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1)
    probs = np.stack([1 - scores, scores], 1)
    first = bootstrap_intervals(labels, probs, ["n", "p"], resamples=50, seed=3)
    assert first == bootstrap_intervals(labels, probs, ["n", "p"], resamples=50, seed=3)
    point = classification_metrics(labels, probs, ["n", "p"])
    for key in ("accuracy", "auroc", "auprc", "auprc_trapz"):
        low, high = first[key]
        assert low < point[key] < high and high - low < 0.2, key


def test_probabilities_are_softmax_or_sigmoid():
    logits = np.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(probabilities(logits, False), [[0.25, 0.75]])
    np.testing.assert_allclose(probabilities(logits, True), [[0.5, 0.75]])


def test_evaluating_the_validation_split_reproduces_the_logged_best_epoch(finished_run, tinynet):
    result = evaluate_run(EvalConfig(run_dir=str(finished_run), split="val", bootstrap=20), data=FakeData(),
                          show=False)
    history = RunDir(finished_run).read_metrics()
    best = min(history, key=lambda r: r["val_loss"])
    assert result["epoch"] == best["epoch"]
    assert result["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert result["accuracy"] == pytest.approx(best["val_accuracy"])
    assert result["auroc"] == pytest.approx(best["val_auroc"])
    assert json.loads((finished_run / "eval_val.json").read_text())["accuracy"] == result["accuracy"]
    assert (finished_run / "confusion_val.png").is_file()
    assert np.sum(result["confusion_matrix"]) == 24 == result["num_examples"]
    # the per-image rows: every image once, in the split's order, and the metrics computed again from them
    assert result["predictions"] == "predictions_val.csv"
    rows = read_predictions(finished_run / "predictions_val.csv")
    labels = np.arange(24) % 3  # FakeData's val labels
    assert list(rows["id"]) == [f"img{i}" for i in range(24)]
    assert list(rows["label"]) == [f"class{c}" for c in labels]
    probs = np.stack([rows[f"prob_class{c}"] for c in range(3)], axis=1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert list(rows["predicted"]) == [f"class{c}" for c in probs.argmax(axis=1)]
    assert np.mean(probs.argmax(axis=1) == labels) == pytest.approx(result["accuracy"])
    assert skm.roc_auc_score(labels, probs, multi_class="ovr") == pytest.approx(result["auroc"], abs=1e-6)


def test_test_split_evaluation_holds_intervals_and_cost(finished_run, tinynet):
    result = evaluate_run(EvalConfig(run_dir=str(finished_run), checkpoint="latest", bootstrap=20),
                          data=FakeData(), show=False)
    assert result["epoch"] == 3 and result["num_examples"] == 30 and result["split"] == "test"
    assert set(result["ci95"]) == {"accuracy", "balanced_accuracy", "auroc", "auprc", "auprc_trapz"}
    # tinynet: convs 3*8*9 + 8*8*9 + 8*16*9 + 16*16*9 * 2, BatchNorms 2 * (8 + 8 + 16 * 3), head 16*3 + 3
    assert result["cost"]["params_backbone"] == 216 + 576 + 1152 + 2 * 2304 + 2 * (8 + 8 + 48)
    assert result["cost"]["params"] == result["cost"]["params_backbone"] + 51
    assert result["cost"]["gmacs"] > 0 and result["cost"]["latency_ms"] > 0


def test_bad_eval_requests_name_the_choices(finished_run, tmp_path):
    with pytest.raises(ConfigError, match=r"^Unknown split 'holdout'; choose one of train, val, test\.$"):
        evaluate_run(EvalConfig(run_dir=str(finished_run), split="holdout"), data=FakeData())
    with pytest.raises(UserError, match=r"is not a ttlx run dir \(no config\.json\)"):
        evaluate_run(EvalConfig(run_dir=str(tmp_path)), data=FakeData())


def test_multilabel_predictions_hold_each_findings_label_and_probability(tmp_path):
    labels = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    probs = np.array([[0.9, 0.2], [0.4, 0.7], [0.3, 0.6]])
    path = write_predictions(tmp_path / "p.csv", ["a/1.jpg", "b,2.jpg", "c"], labels, probs, ["No Finding", "y"],
                             multilabel=True)
    assert path.read_text().splitlines()[0] == "id,label_No Finding,label_y,prob_No Finding,prob_y"
    rows = read_predictions(path)
    assert list(rows["id"]) == ["a/1.jpg", "b,2.jpg", "c"]  # a comma in an id survives the round trip
    np.testing.assert_array_equal(np.stack([rows["label_No Finding"], rows["label_y"]], 1), labels)
    np.testing.assert_allclose(np.stack([rows["prob_No Finding"], rows["prob_y"]], 1), probs, rtol=1e-9)


def test_predictions_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match=r"^2 ids, 3 labels and probabilities of shape \(3, 2\) do not describe"):
        prediction_rows(["a", "b"], [0, 1, 1], np.full((3, 2), 0.5), ["n", "p"], multilabel=False)


def test_worker_processes_score_the_same_resamplings(monkeypatch):
    """The bootstrap's resamplings are drawn in one process, in order: scoring them in worker processes
    gives the very values of one process."""
    from ttlx.metrics import resampled_metrics

    monkeypatch.delenv("TTLX_BOOTSTRAP_WORKERS", raising=False)
    rng = np.random.default_rng(5)
    labels, probs = rng.integers(0, 3, 50), rng.dirichlet([1, 1, 1], 50)
    alone = list(resampled_metrics(labels, [probs, probs[::-1]], ["a", "b", "c"], False, resamples=9, seed=1,
                                   workers=1))
    shared = list(resampled_metrics(labels, [probs, probs[::-1]], ["a", "b", "c"], False, resamples=9, seed=1,
                                    workers=2))
    assert len(alone) == 9 and shared == alone
    assert set(alone[0][0]) == {"accuracy", "balanced_accuracy", "auroc", "auprc", "auprc_trapz"}


def test_bootstrap_workers_follow_the_setting_or_the_cores(monkeypatch):
    import os

    from ttlx.config import check_bootstrap
    from ttlx.metrics import bootstrap_workers

    monkeypatch.delenv("TTLX_BOOTSTRAP_WORKERS", raising=False)
    assert bootstrap_workers(199) == 1  # too little work to start processes for
    assert bootstrap_workers(1000) == min(len(os.sched_getaffinity(0)), 8)
    monkeypatch.setenv("TTLX_BOOTSTRAP_WORKERS", "3")
    assert bootstrap_workers(10) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("TTLX_BOOTSTRAP_WORKERS", bad)
        with pytest.raises(ConfigError, match=rf"^TTLX_BOOTSTRAP_WORKERS='{bad}' is not a whole number of at least 1; "
                                              r"set one or unset it\.$"):
            check_bootstrap(100)  # every command with intervals checks it before it starts
