"""A run dir written before the package moved into subpackages still evaluates, predicts and resumes.

``tests/golden/run_v0_1_0`` was written by ttlx 0.1.0 at commit cb18e37 (flat modules): digits, resnet50
``--trunc 1``, 32 px, batch 32, random init, 2 epochs, seed 0 (train_curves.png left out).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ttlx.config import EvalConfig, TrainConfig
from ttlx.evaluation.evaluate import evaluate_run
from ttlx.evaluation.predict import predict_files
from ttlx.evaluation.trained_run import open_trained_run
from ttlx.training.loop import train

GOLDEN = Path(__file__).parents[1] / "golden" / "run_v0_1_0"

pytestmark = pytest.mark.slow


@pytest.fixture
def old_run(tmp_path):
    return Path(shutil.copytree(GOLDEN, tmp_path / "run"))


def logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_an_old_run_dir_opens_and_its_best_network_gives_its_logged_validation_loss(old_run, digits_dir):
    run = open_trained_run(old_run)
    assert (run.model.arch, run.model.trunc, run.classes) == ("resnet50", 1, [str(i) for i in range(10)])
    result = evaluate_run(EvalConfig(run_dir=str(old_run), split="val", bootstrap=0, data_dir=str(digits_dir)),
                          show=False)
    best = min(logged(old_run), key=lambda row: row["val_loss"])
    assert result["epoch"] == best["epoch"]
    assert math.isclose(result["loss"], best["val_loss"], rel_tol=1e-4)
    rows = (old_run / result["predictions"]).read_text().splitlines()
    assert len(rows) - 1 == len((digits_dir / "digits" / "splits" / "exp1" / "val.csv").read_text().splitlines()) - 1


def test_an_old_run_dir_predicts_image_files(old_run, digits_dir, tmp_path):
    from sklearn.datasets import load_digits

    image = load_digits().images[0]
    path = tmp_path / "zero.png"
    Image.fromarray(np.uint8(image * 255 / 16)).save(path)
    out, summary = predict_files(old_run, [path], data_dir=digits_dir)
    assert summary["files"] == 1 and sum(summary["predicted"].values()) == 1
    assert out.read_text().splitlines()[1].startswith(str(path))


def test_an_old_run_dir_resumes_where_it_stopped(old_run, digits_dir):
    (old_run / "status.json").unlink()  # as if killed after epoch 2's checkpoints: no end record
    before = logged(old_run)
    saved = json.loads((old_run / "config.json").read_text())["train"]
    cfg = TrainConfig.from_dict({**saved, "data_dir": str(digits_dir), "workdir": str(old_run), "max_epoch": 3})
    train(cfg, progress=False)
    after = logged(old_run)
    assert [row["epoch"] for row in after] == [1, 2, 3]
    assert after[:2] == before
