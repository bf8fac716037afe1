"""The analyses and sweeps on volumes: Grad-CAM slice montages, SVCCA per unit, linear probes over 3D points,
and `ttlx sweep --window` over 3D truncation points, with tinynet3d on a small synthetic3d."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.config import TrainConfig
from ttlx.data.prepare import prepare_dataset
from ttlx.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def volumes_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    prepare_dataset("synthetic3d", data_dir, count=24, slices=16, size=32)
    return data_dir


@pytest.fixture(scope="module")
def run_3d(tinynet3d, volumes_dir, tmp_path_factory):
    """One epoch of tinynet3d with a flatten head (whose size depends on the window) on windows of 8 slices."""
    from ttlx.training.loop import train

    cfg = TrainConfig(dataset="synthetic3d", model="tinynet3d", pretrained="random", head="flatten", image_size=32,
                      window=8, batch_size=4, lr=1e-2, max_epoch=1, num_workers=0, data_dir=str(volumes_dir),
                      workdir=str(tmp_path_factory.mktemp("runs") / "run3d"))
    return train(cfg, progress=False)


def test_gradcam_maps_windows_voxel_by_voxel(tinynet3d, tmp_path):
    from ttlx.analysis.gradcam import gradcam, peak_position
    from ttlx.analysis.montage import montage_slices, write_montages
    from ttlx.models import create_model

    model = create_model("tinynet3d", 2, num_classes=2, head="pool", image_size=32, window=8)
    windows = np.random.default_rng(0).normal(size=(3, 8, 32, 32, 1)).astype(np.float32)
    cam = gradcam(model, windows)
    assert cam.maps.shape == (3, 8, 32, 32) and cam.coarse.shape == (3, 2, 8, 8)  # stem /2, layer2 /2
    assert cam.maps.min() >= 0.0 and np.allclose(cam.maps.reshape(3, -1).max(axis=1), 1.0)
    peaks = peak_position(cam.maps)
    assert peaks.shape == (3, 3) and all(cam.maps[i][tuple(p)] == cam.maps[i].max() for i, p in enumerate(peaks))
    assert montage_slices(8, 3, 4) == [0, 3, 5, 7] and montage_slices(24, 23, 4) == [0, 8, 15, 23]
    assert montage_slices(3, 1, 8) == [0, 1, 2]
    paths = write_montages(windows, cam, tmp_path, ids=["s1", "s1", "s2"], starts=[0, 8, 0], slices=4)
    assert [p.name for p in paths] == ["gradcam_000_s1_s0.png", "gradcam_001_s1_s8.png", "gradcam_002_s2_s0.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


@pytest.mark.slow
def test_gradcam_svcca_and_probe_of_a_3d_run(tinynet3d, run_3d, volumes_dir, tmp_path):
    from ttlx.analysis.probe import probe_dataset
    from ttlx.analysis.runs import gradcam_of_run, svcca_of_run

    written = gradcam_of_run(run_3d, split="test", count=3, out=tmp_path / "cams")
    index = json.loads((tmp_path / "cams" / "gradcam.json").read_text())
    assert index["layer"] == "layer3.0" and [p.name for p in written] == [w["png"] for w in index["windows"]]
    first = index["windows"][0]
    assert [w["start"] for w in index["windows"]][:2] == [0, 8] and first["id"] == index["windows"][1]["id"]
    assert first["png"] == f"gradcam_000_{first['id']}_s0.png" and 0 <= first["peak_slice_row_col"][0] < 8
    with pytest.raises(DataError, match="was trained on volumes, so Grad-CAM explains windows"):
        gradcam_of_run(run_3d, paths=[tmp_path / "scan.png"])

    # SVCCA against the start, built with the run's window (a flatten head's size depends on it)
    results, out = svcca_of_run(run_3d, split="test", images=10, positions=16)
    assert list(results) == ["stem", "layer1.0", "layer2.0", "layer2.1", "layer3.0"]
    assert all(r["rows"] == 160 and 0.0 <= r["mean"] <= 1.0 for r in results.values())
    assert (out / "svcca.json").is_file() and (out / "svcca.png").is_file()

    rows = probe_dataset("synthetic3d", "tinynet3d", "random", points=[1, 2], layerwise_points=[2],
                         data_dir=volumes_dir, image_size=32, window=8, batch_size=8)
    assert sorted(r["point"] for r in rows) == ["layerwise 2", "trunc 1", "trunc 2"]
    assert {r["unit"] for r in rows} == {"layer1.0", "layer2.1", "layer2.0"}
    assert all(r["channels"] == 8 and 0.0 <= r["probe_auroc"] <= 1.0 for r in rows)


def test_probes_and_sweeps_refuse_a_3d_network_on_images_and_a_2d_one_on_volumes(tinynet, tinynet3d, volumes_dir,
                                                                                 fake_data, tmp_path):
    from ttlx.analysis.probe import probe_dataset
    from ttlx.sweeps.grid import Grid, run_sweep

    with pytest.raises(ConfigError, match="tinynet3d is a 3D network for volumes and 'fake' holds 2D images"):
        probe_dataset("fake", "tinynet3d", "random", data=fake_data, image_size=32)
    grid = Grid(dataset="synthetic3d", model="tinynet", trunc=(1,), exp=(1,),
                base={"data_dir": str(volumes_dir), "pretrained": "random", "image_size": 32})
    with pytest.raises(ConfigError, match="'synthetic3d' holds 3D volumes and tinynet is a 2D network"):
        run_sweep(grid, tmp_path / "sweep", launch=lambda specs: [])
    assert not (tmp_path / "sweep").exists()
    tf = Grid(dataset="synthetic3d", model="tinynet3d", methods=("ttl", "tf"), trunc=(1,), exp=(1,))
    with pytest.raises(ConfigError, match="tinynet3d has no stages the TF baseline can slim; leave tf out of the"):
        run_sweep(tf, tmp_path / "sweep", launch=lambda specs: [])


@pytest.mark.slow
def test_sweep_over_3d_points_with_a_window(tinynet3d, volumes_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = CliRunner().invoke(app, [
        "sweep", "--dataset", "synthetic3d", "--model", "tinynet3d", "--trunc", "1", "--layerwise", "3",
        "--exp", "1", "--pretrained", "random", "--head", "pool", "--image-size", "32", "--window", "8",
        "--bs", "8", "--max-epoch", "1", "--bootstrap", "10", "--probe", "--data-dir", str(volumes_dir),
        "--out", str(sweep)])
    assert result.exit_code == 0, result.output
    assert json.loads((sweep / "grid.json").read_text())["base"]["window"] == 8
    runs = sorted((sweep / "runs").iterdir())
    assert [r.name.split("_")[1] for r in runs] == ["lw3", "t1"]
    for run in runs:
        assert json.loads((run / "config.json").read_text())["model"]["window"] == 8
        evaluation = json.loads((run / "eval_test.json").read_text())
        assert evaluation["level"] == "study" and evaluation["windows"] == 2 * evaluation["num_examples"]
    summary = (sweep / "summary.md").read_text()
    assert "| ttl | lw3 |" in summary.replace("random | ", "") and "| ttl | t1 |" in summary.replace("random | ", "")
    probe = json.loads((sweep / "probe.json").read_text())
    assert sorted(r["point"] for r in probe) == ["layerwise 3", "trunc 1"]
