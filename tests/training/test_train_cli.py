"""`ttlx train` and `ttlx eval` on the real pipeline (the bundled digits set) with the original spellings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.runs.predictions import read_predictions


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_train_with_original_spellings_then_test_then_eval(digits_dir, tmp_path, tinynet):
    workdir = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--model", "tinynet", "--trunc", "-1", "--pretrained", "random",
            "--pooling", "--image-size", "32", "--bs", "64", "--data_parallel", "--num_workers", "0",
            "--max_epoch", "1", "--lr", "3e-3", "--exp", "1", "--sub", "100", "--data-dir", digits_dir,
            "--workdir", workdir, "--no-progress", "--test", "--bootstrap", "10"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1]
    evaluation = json.loads((workdir / "eval_test.json").read_text())
    assert evaluation["num_examples"] == 359 and len(evaluation["per_class"]) == 10
    # one row per test image, in the split file's order, with the file's labels
    split = list(csv.DictReader((Path(digits_dir) / "digits" / "splits" / "exp1" / "test.csv").open()))
    rows = read_predictions(workdir / evaluation["predictions"])
    assert list(rows["id"]) == [row["id"] for row in split]
    assert list(rows["label"]) == [row["label"] for row in split]
    assert f"per-image predictions: {workdir / 'predictions_test.csv'}\n" in result.stdout  # whole, to copy
    assert "accuracy" in result.stdout and "95% CI" in result.stdout
    # the original test command on a finished run evaluates it again instead of refusing
    (workdir / "eval_test.json").unlink()
    assert run_cli(*args).exit_code == 0 and (workdir / "eval_test.json").is_file()
    # without --test a finished run is refused with one sentence
    refused = run_cli(*args[:-3])
    assert refused.exit_code == 2
    assert f"The run in {workdir} already finished; pass --force" in refused.stderr
    evaluated = run_cli("eval", workdir, "--split", "val", "--bootstrap", "0", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["num_examples"] == 287


def test_an_unprepared_dataset_names_the_prepare_command(tmp_path):
    result = run_cli("train", "--dataset", "digits", "--model", "resnet50", "--data-dir", tmp_path / "empty",
                     "--workdir", tmp_path / "run")
    assert result.exit_code == 2
    assert "ttlx prepare digits" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sweep_then_report_then_svcca_from_the_command_line(digits_dir, tmp_path, tinynet):
    out = tmp_path / "sweep"
    args = ["sweep", "--dataset", "digits", "--model", "tinynet", "--trunc", "1", "--exp", "1",
            "--pretrained", "random", "--head", "pool", "--image-size", "32", "--bs", "64", "--max-epoch", "1",
            "--lr", "3e-3", "--bootstrap", "10", "--data-dir", digits_dir, "--out", out]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "1 runs, 0 failed; summary in" in result.stdout and "AUROC" in result.stdout
    (run_dir,) = (out / "runs").iterdir()
    assert (run_dir / "eval_test.json").is_file()
    summary = (out / "summary.md").read_text()
    (out / "summary.md").unlink()
    rebuilt = run_cli("sweep", "report", out)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (out / "summary.md").read_text() == summary
    again = run_cli(*args)  # a finished sweep: nothing is trained again
    assert again.exit_code == 0 and "done" in again.stdout
    svcca = run_cli("analyze", "svcca", run_dir, "--n", "32", "--positions", "4", "--json")
    assert svcca.exit_code == 0, svcca.output
    layers = json.loads(svcca.stdout)
    assert set(layers) >= {"stem"} and all(0.0 <= r["mean"] <= 1.0 + 1e-6 for r in layers.values())
    assert (run_dir / "analysis" / "svcca" / "svcca.png").is_file()
    assert run_cli("sweep", "report", tmp_path).exit_code == 2
