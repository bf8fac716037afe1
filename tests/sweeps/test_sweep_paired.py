"""`ttlx sweep report --paired`: every run against the FTL run of its repeat, on the same test images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ttlx.analysis.paired import paired_comparison
from ttlx.cli import app
from ttlx.runs.predictions import write_predictions
from ttlx.sweeps.paired import paired_rows, verdict

CLASSES = ["negative", "positive"]


def add_run(sweep, name: str, *, trunc: int, exp: int, noise: float, pretrained: str = "imagenet"):
    """A run dir with the config keys the report reads and test predictions whose noise sets their quality."""
    rng = np.random.default_rng(exp)  # the same images and labels for every run of a repeat
    labels = rng.integers(0, 2, 120)
    shared = rng.normal(size=120)
    p = 1 / (1 + np.exp(-(labels - 0.5 + noise * shared)))
    run = sweep / "runs" / name
    run.mkdir(parents=True)
    train = {"dataset": "bimcv", "model": "resnet50", "pretrained": pretrained, "image_size": 224, "exp": exp,
             "sub": 100, "trunc": trunc, "layerwise": False, "slim_from": None, "freeze_until": None}
    (run / "config.json").write_text(json.dumps({"train": train}))
    (run / "eval_test.json").write_text(json.dumps({"auroc": 0.5, "cost": {}}))
    write_predictions(run / "predictions_test.csv", [f"img{i}" for i in range(120)], labels,
                      np.stack([1 - p, p], 1), CLASSES, multilabel=False)
    return run


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "grid.json").write_text("{}")
    add_run(sweep, "ftl_e1", trunc=-1, exp=1, noise=1.0)
    add_run(sweep, "t2_e1", trunc=2, exp=1, noise=0.3)  # much better than its FTL
    add_run(sweep, "t2_e2", trunc=2, exp=2, noise=0.3)  # no FTL run in repeat 2
    add_run(sweep, "t2_e1_random", trunc=2, exp=1, noise=0.3, pretrained="random")  # no FTL from random weights
    return sweep


def test_a_run_evaluated_on_other_images_is_named_with_the_reason(sweep):
    from ttlx.runs.predictions import read_predictions

    other = add_run(sweep, "t3_e1", trunc=3, exp=1, noise=0.3)
    rows = read_predictions(other / "predictions_test.csv")
    probs = np.stack([rows["prob_negative"], rows["prob_positive"]], 1)[:100]
    labels = [CLASSES.index(name) for name in rows["label"][:100]]
    write_predictions(other / "predictions_test.csv", rows["id"][:100], labels, probs, CLASSES, multilabel=False)
    found, alone = paired_rows(sweep, resamples=20)
    assert [row["run"] for row in found] == ["t2_e1"]
    assert alone[-1].startswith("t3_e1 (") and "hold different images (120 and 100 rows)" in alone[-1]


def test_each_run_meets_the_ftl_run_of_its_repeat_and_weights(sweep):
    rows, alone = paired_rows(sweep, resamples=60, seed=3)
    assert alone == ["t2_e1_random", "t2_e2"]
    [row] = rows
    assert (row["method"], row["point"], row["exp"], row["run"], row["ftl_run"]) == ("ttl", "t2", 1, "t2_e1", "ftl_e1")
    expected = paired_comparison(sweep / "runs" / "ftl_e1", sweep / "runs" / "t2_e1", resamples=60, seed=3)
    for metric in ("auroc", "auprc_trapz"):
        m = expected["metrics"][metric]
        assert row[f"{metric}_diff"] == m["difference"] and [row[f"{metric}_low"], row[f"{metric}_high"]] == m["ci"]
        assert row[metric] == m["b"] and row[f"{metric}_ftl"] == m["a"]
    assert row["auroc_low"] > 0 and verdict(row) == "better"
    assert verdict({"auroc_low": -0.1, "auroc_high": 0.2}) == "no difference shown"
    assert verdict({"auroc_low": -0.3, "auroc_high": -0.1}) == "worse"


def test_sweep_report_paired_writes_both_tables(sweep):
    result = CliRunner().invoke(app, ["sweep", "report", str(sweep), "--paired", "--bootstrap", "40"])
    assert result.exit_code == 0, result.output
    written = (sweep / "paired.md").read_text()
    assert "| ttl | t2 | 100 | 1 | +0." in written and "| better |" in written
    assert "Left out (no single evaluated FTL run of the same dataset, model, weights, image size, repeat and " \
           "subset, or predictions that cannot be paired with its): t2_e1_random; t2_e2." in written
    assert (sweep / "paired.csv").read_text().splitlines()[0].startswith("method,point,sub,exp,images,auroc_ftl")
    assert f"Paired comparisons in {sweep / 'paired.csv'}" in result.stdout
    refused = CliRunner().invoke(app, ["sweep", "report", str(sweep), "--paired", "--bootstrap", "0"])
    assert refused.exit_code == 2 and "--bootstrap" in refused.output
