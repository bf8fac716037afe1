"""The training loop end to end on the tiny network: run dir contents, resume after kill -9, several
devices, LWFT, NaN losses, finished runs and multi-label training."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import fake_data
import numpy as np
import pytest
from fake_data import FakeData
from flax import nnx
from tiny_model import tiny_train_config

from ttlx.config import ModelConfig
from ttlx.errors import ConfigError, UserError, WeightsError
from ttlx.runs.checkpoint import flatten, load_model_state, load_run_weights
from ttlx.runs.run_dir import RunDir, open_run
from ttlx.runtime import process
from ttlx.training.loop import TIMING_COLUMNS, TrainingDiverged, resolve_model, train

TESTS = Path(__file__).parents[1]
REPO = TESTS.parent


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in RunDir(run_dir).read_metrics()]


def run_tiny(workdir: Path, *args: str, devices: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, str(TESTS / "run_tiny.py"), str(workdir), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_finished_run_dir_holds_config_metrics_checkpoints_and_curves(finished_run):
    history = RunDir(finished_run).read_metrics()
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "lr", "val_accuracy", "val_auroc",
                               "images_per_s", "input_wait"}
    assert all(0 <= r["input_wait"] < 1 for r in history)
    assert [r["lr"] for r in history] == [1e-2] * 3
    config = json.loads((finished_run / "config.json").read_text())
    assert config["model"] == ModelConfig(arch="tinynet", trunc=-1, head="pool", num_classes=3,
                                          image_size=32).to_dict()
    assert config["train"]["batch_size"] == 8 and config["dataset"]["classes"] == ["class0", "class1", "class2"]
    assert {"jax_version", "ttlx_version", "git_commit", "devices"} <= set(config)
    status = json.loads((finished_run / "status.json").read_text())
    best = 1 + int(np.argmin([r["val_loss"] for r in history]))
    assert status["best_epoch"] == best and status["stop_reason"] == "max_epoch reached"
    assert load_model_state(finished_run, "best")[0] == best
    assert load_model_state(finished_run, "latest")[0] == 3
    assert (finished_run / "train_curves.png").stat().st_size > 10_000


def test_load_run_weights_returns_the_best_model_state_by_nnx_path(finished_run, tinynet):
    model_cfg, flat = load_run_weights(finished_run)
    assert model_cfg == ModelConfig(arch="tinynet", trunc=-1, head="pool", num_classes=3, image_size=32)
    model = nnx.eval_shape(lambda: tinynet.build(model_cfg, nnx.Rngs(0)))
    expected = {k: v.shape for k, v in flatten(nnx.state(model)).items()}
    assert {k: v.shape for k, v in flat.items()} == expected
    assert {"conv1.kernel", "bn1.mean", "bn1.var", "layer2.1.conv.kernel", "fc.kernel", "fc.bias"} <= set(flat)
    assert all(isinstance(v, np.ndarray) for v in flat.values())


def test_pretrained_from_a_run_dir_starts_from_its_best_weights(finished_run, tinynet):
    from ttlx.models import create_model

    _, flat = load_run_weights(finished_run)
    model = create_model("tinynet", 1, num_classes=5, head="pool", image_size=32, pretrained=str(finished_run))
    state = flatten(nnx.state(model))
    np.testing.assert_array_equal(state["layer1.0.conv.kernel"], flat["layer1.0.conv.kernel"])
    np.testing.assert_array_equal(state["bn1.mean"], flat["bn1.mean"])
    assert state["fc.kernel"].shape == (8, 5)  # a new head for the new classes


@pytest.mark.slow
def test_rerunning_after_kill_9_resumes_and_matches_an_uninterrupted_run(finished_run, tmp_path, tinynet):
    workdir = tmp_path / "killed"
    killed = run_tiny(workdir, "--kill-after-epoch", "2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [r["epoch"] for r in RunDir(workdir).read_metrics()] == [1]  # epoch 2 was saved, its line not written
    assert not RunDir(workdir).finished()
    train(tiny_train_config(workdir), progress=False, data=FakeData())
    assert rows(workdir) == rows(finished_run)
    for which in ("best", "latest"):
        resumed, uninterrupted = load_model_state(workdir, which), load_model_state(finished_run, which)
        assert resumed[0] == uninterrupted[0]
        for key, value in uninterrupted[1].items():
            np.testing.assert_array_equal(resumed[1][key], value, err_msg=key)


@pytest.mark.slow
def test_four_devices_give_the_losses_and_parameters_of_one(finished_run, tmp_path, tinynet):
    workdir = tmp_path / "four"
    done = run_tiny(workdir, devices=4)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads((workdir / "config.json").read_text())["devices"]) == 4
    four, one = rows(workdir), rows(finished_run)
    for a, b in zip(four, one, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    latest_four, latest_one = load_model_state(workdir, "latest")[1], load_model_state(finished_run, "latest")[1]
    for key, value in latest_one.items():
        np.testing.assert_allclose(latest_four[key], value, rtol=1e-3, atol=2e-5, err_msg=key)
    refused = run_tiny(tmp_path / "six", "--bs", "6", devices=4)
    assert refused.returncode == 2
    assert "Batch size 6 does not divide across 4 devices; choose a multiple of 4 (e.g. --bs 8)." in refused.stdout


def test_a_finished_run_is_not_overwritten_without_force(finished_run, tinynet):
    cfg = tiny_train_config(finished_run)
    before = (finished_run / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match=r"already finished; pass --force to train it again from scratch"):
        train(cfg, progress=False, data=FakeData())
    assert (finished_run / "metrics.jsonl").read_text() == before


def test_force_starts_over(tmp_path, tinynet):
    cfg = tiny_train_config(tmp_path / "again", max_epoch=1)
    first = rows(train(cfg, progress=False, data=FakeData()))
    (tmp_path / "again" / "marker").write_text("old")
    second = rows(train(cfg, force=True, progress=False, data=FakeData()))
    assert second == first and not (tmp_path / "again" / "marker").exists()


def test_epochs_run_with_the_heap_out_of_the_garbage_collectors_reach_and_curves_drawn_at_most_every_30_s(
        tmp_path, tinynet, monkeypatch):
    from ttlx.report import figures
    from ttlx.training import loop as training

    frozen_at_epoch_start, curves = [], []
    freeze, draw = process.freeze_heap, figures.train_curves

    def spy():
        freeze()
        frozen_at_epoch_start.append(gc.get_freeze_count())

    monkeypatch.setattr(process, "freeze_heap", spy)
    monkeypatch.setattr(figures, "train_curves", lambda rows, path: curves.append(len(rows)) or draw(rows, path))
    monkeypatch.setattr(training, "CURVES_EVERY_S", 3600.0)
    loaders, closed_iterators = [], []

    class Recorded(FakeData):
        def make_loader(self, *args, **kwargs):
            loaders.append(super().make_loader(*args, **kwargs))
            return loaders[-1]

    monkeypatch.setattr(fake_data.FakeIterator, "close", lambda it: closed_iterators.append(it.loader.train))
    run_dir = train(tiny_train_config(tmp_path / "run", max_epoch=3), progress=False, data=Recorded())
    # the loaders' worker processes end with the run: the training iterator and the validation loader close
    assert closed_iterators == [True] and [getattr(x, "closed", False) for x in loaders] == [False, True]
    # on entering the loop and at each epoch's start, with the compiled steps' objects frozen from epoch 2
    assert len(frozen_at_epoch_start) == 4 and frozen_at_epoch_start[-1] >= frozen_at_epoch_start[0] > 0
    assert gc.get_freeze_count() == 0  # collectable again after the run
    assert curves == [1, 3] and (run_dir / "train_curves.png").exists()  # after epoch 1, then after the last


def test_resuming_with_other_options_is_refused(tmp_path, tinynet):
    cfg = tiny_train_config(tmp_path / "run")
    _, model_cfg = resolve_model(cfg, 3)
    open_run(tmp_path / "run", cfg, model_cfg, {}, force=False)
    changed = tiny_train_config(tmp_path / "run", lr=1e-3)
    with pytest.raises(ConfigError, match=r"holds a run started with lr=0\.01, not 0\.001; re-run with the same "
                                          r"options to resume it"):
        open_run(tmp_path / "run", changed, model_cfg, {}, force=False)
    # the loader's worker count does not change any batch, so a run may resume with another one
    open_run(tmp_path / "run", tiny_train_config(tmp_path / "run", num_workers=3), model_cfg, {}, force=False)


class AlteredTrainData(FakeData):
    """Fake data whose training batches pass through ``alter`` on their way to the loop."""

    def alter(self, position: int, batch: dict, steps_per_epoch: int) -> dict:
        return batch

    def make_loader(self, *args, **kwargs):
        loader = super().make_loader(*args, **kwargs)
        if kwargs["train"]:
            clean = loader.train_batch
            loader.train_batch = lambda position: self.alter(position, clean(position), loader.steps_per_epoch)
        return loader


class NaNData(AlteredTrainData):
    """Fake data whose 3rd training batch of epoch 2 holds a NaN image."""

    def alter(self, position, batch, steps_per_epoch):
        if position == steps_per_epoch + 2:
            batch["image"] = batch["image"].copy()
            batch["image"][0, 0, 0, 0] = np.nan
        return batch


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, tinynet):
    workdir = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as err:
        train(tiny_train_config(workdir), progress=False, data=NaNData())
    assert gc.get_freeze_count() == 0  # the run's objects are collectable again (process.heap_frozen)
    assert str(err.value) == (
        f"The loss became nan at epoch 2, step 3; training stopped and the last good checkpoint (epoch 1) is kept "
        f"in {workdir / 'checkpoints'}. Lower --lr or check the data, then start again with --force."
    )
    assert load_model_state(workdir, "latest")[0] == 1
    assert [r["epoch"] for r in RunDir(workdir).read_metrics()] == [1]


class SlowData(AlteredTrainData):
    """Fake data whose training batches take 0.15 s each to arrive: a run bound by its input."""

    def alter(self, position, batch, steps_per_epoch):
        time.sleep(0.15)
        return batch


def test_a_run_that_waits_for_its_loader_says_so_once(tmp_path, tinynet, capsys):
    workdir = tmp_path / "slow"
    train(tiny_train_config(workdir), progress=False, data=SlowData())
    history = RunDir(workdir).read_metrics()
    assert all(r["input_wait"] > 0.5 for r in history[1:])  # 0.15 s per batch against a step of milliseconds
    err = capsys.readouterr().err
    assert err.count("the training loop waited for images during") == 1  # epoch 2 says it, epoch 3 does not
    assert "of epoch 2" in err and "TTLX_LOADER_THREADS" in err and "--num-workers N, this run has 0" in err


@pytest.mark.slow
def test_lwft_keeps_the_frozen_weights_and_batchnorm_statistics(tmp_path, tinynet):
    from ttlx.models import create_model

    cfg = tiny_train_config(tmp_path / "lwft", freeze_until=1, ptl_decay=10.0, max_epoch=1)
    train(cfg, progress=False, data=FakeData())
    start = flatten(nnx.state(create_model("tinynet", -1, num_classes=3, head="pool", image_size=32)))
    trained = load_model_state(tmp_path / "lwft", "latest")[1]
    frozen = {"conv1.kernel", "layer1.0.conv.kernel"} | {f"{bn}.{v}" for bn in ("bn1", "layer1.0.bn")
                                                          for v in ("scale", "bias", "mean", "var")}
    for key in frozen:
        np.testing.assert_array_equal(trained[key], start[key], err_msg=key)
    for key in ("layer2.0.conv.kernel", "layer2.0.bn.mean", "fc.kernel"):
        assert not np.allclose(trained[key], start[key]), key


def test_multilabel_training_uses_bce_with_pos_weight(tmp_path, tinynet):
    run = train(tiny_train_config(tmp_path / "multi", max_epoch=2), progress=False,
                data=FakeData(multilabel=True))
    history = RunDir(run).read_metrics()
    assert len(history) == 2 and all(np.isfinite(r["val_loss"]) and 0 <= r["val_auroc"] <= 1 for r in history)
    assert json.loads((run / "config.json").read_text())["dataset"]["multilabel"] is True


@pytest.mark.parametrize("model, trunc, layerwise, expected", [
    ("layerttl_resnet50", 12, False, (True, 11)),
    ("layerttl_resnet50", -1, False, (True, 16)),
    ("resnet50", 3, False, (False, 3)),
])
def test_original_model_names_resolve_to_their_truncation_points(model, trunc, layerwise, expected):
    cfg = tiny_train_config("x", model=model, trunc=trunc, layerwise=layerwise, head="flatten", image_size=224)
    _, model_cfg = resolve_model(cfg, 2)
    assert (model_cfg.arch, model_cfg.layerwise, model_cfg.trunc, model_cfg.head) == ("resnet50", *expected,
                                                                                      "flatten")


def test_training_needs_a_head():
    with pytest.raises(ConfigError, match=r"^Training needs a classifier head; choose --head pool or --head "
                                          r"flatten\.$"):
        resolve_model(tiny_train_config("x", model="resnet50", head="none"), 2)


@pytest.mark.slow
def test_a_bfloat16_run_trains_and_keeps_float32_weights(tmp_path, tinynet):
    run = train(tiny_train_config(tmp_path / "bf16", dtype="bfloat16", max_epoch=1), progress=False,
                data=FakeData())
    assert json.loads((run / "config.json").read_text())["model"]["dtype"] == "bfloat16"
    assert np.isfinite(RunDir(run).read_metrics()[0]["val_loss"])
    weights = load_model_state(run, "best")[1]
    assert {v.dtype for v in weights.values()} == {np.dtype("float32")}


def test_a_bad_pretrained_source_leaves_no_run_dir(tmp_path, tinynet):
    (tmp_path / "not_a_run").mkdir()
    cfg = tiny_train_config(tmp_path / "run", pretrained=str(tmp_path / "not_a_run"))
    with pytest.raises(WeightsError, match=r"is a folder but not a ttlx run dir \(it has no config\.json\)"):
        train(cfg, progress=False, data=FakeData())
    assert not (tmp_path / "run").exists()


def test_a_relative_run_dir_trains_resumes_and_loads(tmp_path, tinynet, monkeypatch):
    """The default run dir is relative (runs/<dataset>/<name>); checkpoints must work from it."""
    monkeypatch.chdir(tmp_path)
    run_dir = train(tiny_train_config(Path("runs") / "relative", max_epoch=1), progress=False, data=FakeData())
    assert not run_dir.is_absolute() and (tmp_path / run_dir / "status.json").is_file()
    assert load_model_state(run_dir, "best")[0] == 1
