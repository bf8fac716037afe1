"""Two runs compared on the same images: the paired bootstrap and `ttlx analyze paired`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm
from typer.testing import CliRunner

from ttlx.analysis.paired import paired_comparison
from ttlx.cli import app
from ttlx.errors import ConfigError, DataError, UserError
from ttlx.metrics import bootstrap_intervals, paired_bootstrap
from ttlx.runs.predictions import write_predictions

CLASSES = ["negative", "positive"]


def scores(seed: int, n: int = 200, noise: float = 0.6):
    """Binary labels and two models' probabilities: B is A with less noise on the same images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    a = 1 / (1 + np.exp(-(labels - 0.5 + noise * shared)))
    b = 1 / (1 + np.exp(-(labels - 0.5 + 0.5 * noise * shared)))
    return labels, np.stack([1 - a, a], 1), np.stack([1 - b, b], 1)


def test_identical_predictions_differ_by_nothing():
    labels, probs, _ = scores(0)
    out = paired_bootstrap(labels, probs, probs.copy(), CLASSES, resamples=50)
    assert set(out) == {"accuracy", "balanced_accuracy", "auroc", "auprc", "auprc_trapz"}
    for key, m in out.items():
        assert m["difference"] == 0 and m["ci"] == [0.0, 0.0] and m["p_value"] == 1.0, key


@pytest.mark.slow
def test_a_better_model_on_the_same_images_is_told_apart_more_sharply_than_by_separate_intervals():
    labels, a, b = scores(1)
    out = paired_bootstrap(labels, a, b, CLASSES, resamples=100, seed=2)
    auroc = out["auroc"]
    assert auroc["a"] == pytest.approx(skm.roc_auc_score(labels, a[:, 1]))
    assert auroc["b"] == pytest.approx(skm.roc_auc_score(labels, b[:, 1]))
    assert auroc["difference"] == pytest.approx(auroc["b"] - auroc["a"]) and auroc["difference"] > 0
    assert 0 < auroc["ci"][0] < auroc["difference"] < auroc["ci"][1]
    assert auroc["p_value"] == pytest.approx(1 / 100)  # no resample on the far side of zero
    # pairing cancels what the two share: narrower than two separate intervals would make the difference's
    widths = [np.subtract(*bootstrap_intervals(labels, p, CLASSES, resamples=100, seed=2)["auroc"][::-1])
              for p in (a, b)]
    assert auroc["ci"][1] - auroc["ci"][0] < 0.85 * np.hypot(*widths)
    # with the same seed, the same images: swapping A and B flips the sign
    flipped = paired_bootstrap(labels, b, a, CLASSES, resamples=100, seed=2)["auroc"]
    assert flipped["difference"] == -auroc["difference"]
    np.testing.assert_allclose(flipped["ci"], [-auroc["ci"][1], -auroc["ci"][0]], rtol=1e-12)


def write_pair(folder, ids_b=None, classes_b=None):
    folder.mkdir(parents=True, exist_ok=True)
    labels, a, b = scores(3, n=60)
    ids = [f"img{i}" for i in range(60)]
    path_a = write_predictions(folder / "a.csv", ids, labels, a, CLASSES, multilabel=False)
    path_b = write_predictions(folder / "b.csv", ids_b or ids, labels, b, classes_b or CLASSES, multilabel=False)
    return path_a, path_b, labels, a, b


def test_paired_comparison_reads_two_runs_predictions(tmp_path):
    (tmp_path / "ftl").mkdir()
    (tmp_path / "ttl2").mkdir()
    labels, a, b = scores(4, n=80)
    ids = [f"img{i}" for i in range(80)]
    write_predictions(tmp_path / "ftl" / "predictions_test.csv", ids, labels, a, CLASSES, multilabel=False)
    write_predictions(tmp_path / "ttl2" / "predictions_test.csv", ids, labels, b, CLASSES, multilabel=False)
    result = paired_comparison(tmp_path / "ftl", tmp_path / "ttl2", resamples=30, seed=1)
    assert result["num_examples"] == 80 and result["split"] == "test"
    expected = paired_bootstrap(labels, a, b, CLASSES, resamples=30, seed=1)
    for key, m in expected.items():  # the CSV's 9 digits keep every metric
        assert result["metrics"][key]["difference"] == pytest.approx(m["difference"], abs=1e-7), key
    multi = [[1, 0], [0, 1], [1, 1], [0, 0]] * 5
    probs = np.random.default_rng(0).random((20, 2))
    write_predictions(tmp_path / "m_a.csv", range(20), multi, probs, ["x", "y"], multilabel=True)
    write_predictions(tmp_path / "m_b.csv", range(20), multi, probs[::-1], ["x", "y"], multilabel=True)
    out = paired_comparison(tmp_path / "m_a.csv", tmp_path / "m_b.csv", resamples=20)
    assert out["metrics"]["auroc"]["a"] == pytest.approx(
        np.mean([skm.roc_auc_score(np.asarray(multi)[:, c], probs[:, c]) for c in range(2)]))


def test_runs_that_cannot_be_compared_are_refused_with_a_sentence(tmp_path):
    path_a, _, _, _, _ = write_pair(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match=rf"^{run} has no predictions_val.csv; run `ttlx eval {run} --split val`"):
        paired_comparison(path_a, run, split="val")
    with pytest.raises(UserError, match=r"does not exist; pass a run dir or a predictions CSV\.$"):
        paired_comparison(path_a, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"^Unknown split 'holdout'; choose one of train, val, test\.$"):
        paired_comparison(path_a, path_a, split="holdout")
    with pytest.raises(UserError, match=r"^--bootstrap must be at least 1, got 0\.$"):
        paired_comparison(path_a, path_a, resamples=0)
    _, other, _, _, _ = write_pair(tmp_path / "x", ids_b=[f"other{i}" for i in range(60)])
    with pytest.raises(UserError, match=r"hold different images \(60 and 60 rows\); compare runs evaluated on"):
        paired_comparison(path_a, other)
    _, renamed, _, _, _ = write_pair(tmp_path / "y", classes_b=["no", "yes"])
    with pytest.raises(UserError, match=r"score different classes \(negative, positive against no, yes\)"):
        paired_comparison(path_a, renamed)
    (tmp_path / "bad.csv").write_text("name,score\na,0.5\n")
    with pytest.raises(DataError, match=r"is not a predictions CSV written by ttlx eval"):
        paired_comparison(path_a, tmp_path / "bad.csv")


def test_analyze_paired_prints_the_table_and_json(tmp_path):
    path_a, path_b, _, _, _ = write_pair(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["analyze", "paired", str(path_a), str(path_b), "--bootstrap", "40"])
    assert shown.exit_code == 0, shown.output
    assert "B minus A on the same 60 test images (40 paired resamples)" in shown.stdout
    assert "auroc" in shown.stdout and "95% CI" in shown.stdout
    as_json = runner.invoke(app, ["analyze", "paired", str(path_a), str(path_b), "--bootstrap", "40", "--json"])
    assert json.loads(as_json.stdout)["metrics"]["auroc"]["difference"] > 0
    refused = runner.invoke(app, ["analyze", "paired", str(path_a), str(tmp_path / "nowhere")])
    assert refused.exit_code == 2 and "does not exist; pass a run dir or a predictions CSV." in refused.stderr
