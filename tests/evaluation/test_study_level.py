"""Volumes through train and eval: windows in training, probabilities aggregated per study in evaluation."""

import csv
import json

import numpy as np
import pytest
from rich.console import Console

from ttlx.config import EvalConfig, TrainConfig
from ttlx.data.prepare import prepare_dataset
from ttlx.errors import ConfigError
from ttlx.evaluation.study import aggregate_windows
from ttlx.metrics import classification_metrics


def test_max_and_mean_over_each_studys_windows():
    ids = np.array(["b", "b", "a", "c", "a"])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.6, 0.4], [0.9, 0.1]])
    studies, out = aggregate_windows(ids, probs, "max")
    assert list(studies) == ["b", "a", "c"]  # the order the windows came in
    np.testing.assert_allclose(out, [[0.3, 0.7], [0.8, 0.2], [0.6, 0.4]])
    _, mean = aggregate_windows(ids, probs, "mean")
    np.testing.assert_allclose(mean, [[0.6, 0.4], [0.85, 0.15], [0.6, 0.4]])
    three = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    _, out = aggregate_windows(np.array(["s", "s"]), three, "max")
    np.testing.assert_allclose(out, [[0.5 / 1.6, 0.3 / 1.6, 0.8 / 1.6]])


def test_eval_refuses_an_unknown_aggregation():
    with pytest.raises(ConfigError, match="--aggregate must be one of max, mean"):
        EvalConfig(run_dir="x", aggregate="median")


@pytest.fixture(scope="module")
def volumes_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    prepare_dataset("synthetic3d", data_dir, count=20, slices=16, size=32)
    return data_dir


def _config(volumes_dir, workdir, **overrides):
    options = dict(dataset="synthetic3d", model="tinynet3d", pretrained="random", head="pool", image_size=32,
                   window=8, batch_size=4, lr=1e-2, max_epoch=2, num_workers=0, data_dir=str(volumes_dir),
                   workdir=str(workdir))
    return TrainConfig(**{**options, **overrides})


def test_a_3d_network_on_images_and_a_2d_one_on_volumes_stop_with_one_sentence(tinynet, tinynet3d, volumes_dir,
                                                                                tmp_path, fake_data):
    from ttlx.training.loop import train

    with pytest.raises(ConfigError, match="tinynet3d is a 3D network for volumes and 'fake' holds 2D images"):
        train(_config(volumes_dir, tmp_path / "a", dataset="fake", data_dir=None), progress=False, data=fake_data)
    with pytest.raises(ConfigError, match="'synthetic3d' holds 3D volumes and tinynet is a 2D network"):
        train(_config(volumes_dir, tmp_path / "b", model="tinynet"), progress=False)
    with pytest.raises(ConfigError, match="--window sets the slices per window of a 3D network, and tinynet is a 2D"):
        train(_config(volumes_dir, tmp_path / "c", model="tinynet", dataset="fake", data_dir=None), progress=False,
              data=fake_data)
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.slow
def test_train_on_windows_and_evaluate_per_study(tinynet3d, volumes_dir, tmp_path):
    from ttlx.evaluation.evaluate import evaluate_run, print_result
    from ttlx.training.loop import train

    run_dir = train(_config(volumes_dir, tmp_path / "run"), progress=False)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["dataset"]["volumetric"] and saved["model"]["window"] == 8
    result = evaluate_run(EvalConfig(run_dir=str(run_dir), bootstrap=20), show=False)
    test_ids = [r["id"] for r in csv.DictReader(open(volumes_dir / "synthetic3d" / "splits" / "exp1" / "test.csv"))]
    assert result["level"] == "study" and result["aggregate"] == "max"
    assert result["num_examples"] == len(test_ids) and result["windows"] == 2 * len(test_ids)  # 16 slices / 8
    rows = list(csv.DictReader(open(run_dir / "predictions_test.csv")))
    windows = list(csv.DictReader(open(run_dir / "predictions_test_windows.csv")))
    assert [r["id"] for r in rows] == test_ids and len(windows) == 2 * len(test_ids)
    for row in rows:
        mine = [float(w["prob_positive"]) for w in windows if w["id"] == row["id"]]
        assert float(row["prob_positive"]) == pytest.approx(max(mine), rel=1e-6)
    labels = np.array([int(r["label"] == "positive") for r in rows])
    probs = np.array([[float(r["prob_negative"]), float(r["prob_positive"])] for r in rows])
    again = classification_metrics(labels, probs, ("negative", "positive"), False)
    assert again["auroc"] == pytest.approx(result["auroc"], rel=1e-6)
    low, high = result["ci95"]["auroc"]
    assert low <= result["auroc"] <= high
    mean = evaluate_run(EvalConfig(run_dir=str(run_dir), bootstrap=0, aggregate="mean"), show=False)
    assert mean["aggregate"] == "mean" and mean["num_examples"] == len(test_ids)
    console = Console(record=True, width=400)
    print_result(result, console)
    assert f"per-study predictions: {run_dir / 'predictions_test.csv'}\n" in console.export_text()


def test_image_files_are_refused_for_a_run_trained_on_volumes(tmp_path):
    from ttlx.config import ModelConfig
    from ttlx.errors import DataError
    from ttlx.evaluation.trained_run import TrainedRun

    run = TrainedRun(tmp_path, TrainConfig(dataset="synthetic3d"), ModelConfig(), {"volumetric": True})
    with pytest.raises(DataError, match="was trained on volumes, and image files cannot be its input"):
        run.stored_form()
