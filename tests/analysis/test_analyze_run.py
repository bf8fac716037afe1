"""`ttlx analyze svcca|gradcam RUN_DIR` on a finished tiny run: files written, their content, bad input."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ttlx.analysis.runs import gradcam_of_run, svcca_of_run
from ttlx.cli import app
from ttlx.errors import ConfigError, DataError


def test_svcca_of_a_run_compares_every_unit_with_the_start(finished_run, fake_data, tmp_path):
    results, out = svcca_of_run(finished_run, split="val", images=20, positions=8, batch_size=8, data=fake_data)
    assert out == finished_run / "analysis" / "svcca"
    saved = json.loads((out / "svcca.json").read_text())
    assert list(saved) == ["stem", "layer1.0", "layer2.0", "layer2.1", "layer3.0"]
    for entry in saved.values():
        assert entry["rows"] == 20 * 8  # the val split holds 24 images; --n 20 takes the first 20
        assert 0.0 < entry["mean"] <= 1.0 and len(entry["coefficients"]) == min(entry["dims"])
    # three epochs at lr 1e-2 moved the weights: the last unit is no longer its start
    assert saved["layer3.0"]["mean"] < 0.999
    assert (out / "svcca.png").stat().st_size > 5000


def test_gradcam_of_a_run_writes_overlays_and_an_index(finished_run, fake_data, tmp_path):
    written = gradcam_of_run(finished_run, split="test", count=5, data=fake_data, out=tmp_path / "cams")
    assert [p.name for p in written] == [f"gradcam_{i:03d}_img{i}.png" for i in range(5)]
    index = json.loads((tmp_path / "cams" / "gradcam.json").read_text())
    assert index["layer"] == "layer3.0"
    assert [e["label"] for e in index["images"]] == [0, 1, 2, 0, 1]  # FakeData's labels cycle over classes
    assert all(0 <= r < 32 and 0 <= c < 32 for r, c in (e["peak_row_col"] for e in index["images"]))


def test_gradcam_of_image_files(finished_run, tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(path)
    written = gradcam_of_run(finished_run, paths=[path], out=tmp_path / "files")
    assert [p.name for p in written] == ["gradcam_000_" + str(tmp_path / "scan").replace("/", "_")[-60:].strip("_")
                                         + ".png"]
    with pytest.raises(DataError, match=r"missing.png does not exist; check the path\."):
        gradcam_of_run(finished_run, paths=[tmp_path / "missing.png"])
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match=r"text.png is not a readable image \(.+\); pass PNG or JPEG files\.$"):
        gradcam_of_run(finished_run, paths=[tmp_path / "text.png"])


def test_bad_requests_are_refused_with_one_sentence(finished_run, fake_data):
    with pytest.raises(ConfigError, match="Unknown split 'dev'; choose one of train, val, test."):
        svcca_of_run(finished_run, split="dev", data=fake_data)
    with pytest.raises(ConfigError, match="The model has no unit 'layer9.0'; choose one of: stem, layer1.0"):
        gradcam_of_run(finished_run, count=2, layer="layer9.0", data=fake_data)
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", "svcca", str(finished_run), "--keep", "1.5"])
    assert result.exit_code == 2 and "--keep is a share of variance in (0, 1], got 1.5." in result.output
    result = runner.invoke(app, ["analyze", "gradcam", str(finished_run.parent)])
    assert result.exit_code == 2 and "is not a ttlx run dir (no config.json)" in result.output
