"""Faults injected into training: kill -9 at several points, a full disk, damaged checkpoints, repeated
runs and a long run's memory. The outcome is always the run an uninterrupted process would have made."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_data import FakeData
from tiny_model import tiny_train_config

from ttlx.runs.checkpoint import load_model_state
from ttlx.runs.run_dir import RunDir
from ttlx.training.loop import TIMING_COLUMNS, train

TESTS = Path(__file__).parents[1]


def rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in RunDir(run_dir).read_metrics()]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same metrics, and bit-identical best and latest model states."""
    assert rows(run_dir) == rows(reference)
    for which in ("best", "latest"):
        got, want = load_model_state(run_dir, which), load_model_state(reference, which)
        assert got[0] == want[0], which
        assert set(got[1]) == set(want[1])
        for key, value in want[1].items():
            np.testing.assert_array_equal(got[1][key], value, err_msg=f"{which}: {key}")


def run_tiny(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(TESTS / "run_tiny.py"), str(workdir), *args], cwd=TESTS.parent,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("where,epochs_logged,latest", [
    ("step:2:3", [1], 1),   # in the middle of epoch 2
    ("save:2", [1], 1),     # while epoch 2's latest checkpoint is half written
    ("eval:3", [1, 2], 2),  # during epoch 3's validation pass
    ("writing:3:2", [1], 1),  # in epoch 3 while epoch 2's checkpoints are written in the background
])
@pytest.mark.slow
def test_kill_9_anywhere_then_rerun_ends_as_an_uninterrupted_run(where, epochs_logged, latest, finished_run,
                                                                 tmp_path, tinynet):
    workdir = tmp_path / "killed"
    killed = run_tiny(workdir, "--kill-at", where)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = RunDir(workdir)
    assert not run.finished()
    assert [r["epoch"] for r in run.read_metrics()] == epochs_logged
    if where.startswith("writing"):  # the kill did land while the next step was being written
        assert list((workdir / "checkpoints" / "latest").glob(f"{latest + 1}.orbax-checkpoint-tmp*"))
    assert load_model_state(workdir, "latest")[0] == latest  # the newest complete checkpoint, never a torn one
    train(tiny_train_config(workdir), progress=False, data=FakeData())
    assert_same_run(workdir, finished_run)


def test_the_same_command_twice_gives_identical_metrics_and_weights(finished_run, tmp_path, tinynet):
    again = train(tiny_train_config(tmp_path / "again"), progress=False, data=FakeData())
    assert_same_run(again, finished_run)


def train_until_epoch_2(workdir: Path) -> None:
    """A run stopped after epoch 2 with both latest steps on disk, as a kill after epoch 2 leaves it."""
    train(tiny_train_config(workdir, max_epoch=2), progress=False, data=FakeData())
    (workdir / "status.json").unlink()  # not finished: the same command with max_epoch 3 resumes it
    assert sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir()) == ["1", "2"]


def damage(step: Path, how: str) -> None:
    if how == "arrays deleted":
        shutil.rmtree(step / "arrays")
    elif how == "array data overwritten":
        for blob in (step / "arrays").rglob("d/*"):
            blob.write_bytes(bytes(range(256)) * (blob.stat().st_size // 256 + 1))
    elif how == "meta not JSON":
        (step / "meta" / "metadata").write_text('{"epoch": 2, "hist')
    elif how == "array manifest truncated":
        for manifest in (step / "arrays").rglob("manifest.ocdbt"):
            manifest.write_bytes(manifest.read_bytes()[:10])


# orbax leaves an asyncio callback behind when a read fails; it is harmless
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["arrays deleted", "array data overwritten", "meta not JSON",
                                 "array manifest truncated"])
@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before_and_says_so(how, finished_run, tmp_path,
                                                                             tinynet, capsys):
    workdir = tmp_path / "damaged"
    train_until_epoch_2(workdir)
    damage(workdir / "checkpoints" / "latest" / "2", how)
    train(tiny_train_config(workdir), progress=False, data=FakeData())
    out = capsys.readouterr()
    assert (f"Warning: the latest checkpoint of epoch 2 in {workdir / 'checkpoints'} is damaged"
            in out.out + out.err)
    assert "resuming from epoch 1 instead." in out.out + out.err
    assert_same_run(workdir, finished_run)  # epoch 2 was trained again: nothing lost


def test_no_intact_checkpoint_stops_with_a_sentence_and_keeps_the_metrics(tmp_path, tinynet):
    from ttlx.runs.checkpoint import DamagedCheckpointError

    workdir = tmp_path / "ruined"
    train_until_epoch_2(workdir)
    metrics = (workdir / "metrics.jsonl").read_text()
    for step in ("1", "2"):
        damage(workdir / "checkpoints" / "latest" / step, "arrays deleted")
    with pytest.raises(DamagedCheckpointError, match=r"No intact latest checkpoint is left in .*checkpoints "
                                                     r"\(epoch 1: .*\); pass --force to start the run over\."):
        train(tiny_train_config(workdir), progress=False, data=FakeData())
    shutil.rmtree(workdir / "checkpoints")
    with pytest.raises(DamagedCheckpointError, match=r"logs 2 epochs but holds no latest checkpoint to resume "
                                                     r"from; pass --force to start the run over"):
        train(tiny_train_config(workdir), progress=False, data=FakeData())
    assert (workdir / "metrics.jsonl").read_text() == metrics


def test_a_damaged_best_checkpoint_is_one_sentence_at_evaluation(finished_run, tmp_path):
    from ttlx.runs.checkpoint import DamagedCheckpointError

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    best = max((copy / "checkpoints" / "best").iterdir(), key=lambda p: int(p.name))  # the one eval reads
    damage(best, "arrays deleted")
    with pytest.raises(DamagedCheckpointError, match=r"The best checkpoint in .* is damaged \(.*\); evaluate "
                                                     r"`--checkpoint latest` instead, or train the run again"):
        load_model_state(copy, "best")


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_one_and_the_metrics(finished_run, tmp_path,
                                                                                    tinynet, monkeypatch):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    from ttlx.runs.checkpoint import CheckpointSaveError

    save_fn = handler.JsonCheckpointHandler._save_fn

    async def full_at_epoch_2(self, x, directory):  # epoch 2's arrays are written, then the disk is full
        if "latest/2." in str(directory):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await save_fn(self, x, directory)

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", full_at_epoch_2)
    workdir = tmp_path / "full"
    with pytest.raises(CheckpointSaveError) as err:
        train(tiny_train_config(workdir), progress=False, data=FakeData())
    assert str(err.value) == (
        f"Saving the checkpoint of epoch 2 to {workdir / 'checkpoints' / 'latest'} failed (the disk is full); the "
        "checkpoint of epoch 1 is kept: free some space and re-run the same command to resume.")
    assert [r["epoch"] for r in RunDir(workdir).read_metrics()] == [1]
    assert load_model_state(workdir, "latest")[0] == 1
    monkeypatch.undo()  # space freed
    train(tiny_train_config(workdir), progress=False, data=FakeData())
    assert_same_run(workdir, finished_run)


class HalfWrittenFile:
    """A file whose disk fills half-way through the next write."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, text):
        self.f.write(text[: len(text) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
def test_a_full_disk_while_logging_metrics_keeps_earlier_lines_and_resumes(finished_run, tmp_path, tinynet,
                                                                           monkeypatch):
    import builtins

    import ttlx.runs.run_dir as run_dir
    from ttlx.errors import WriteError

    def open_filling_at_epoch_2(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if mode == "a" and len(RunDir(Path(path).parent).read_metrics()) == 1:
            return HalfWrittenFile(f)
        return f

    monkeypatch.setattr(run_dir, "open", open_filling_at_epoch_2, raising=False)
    workdir = tmp_path / "full"
    with pytest.raises(WriteError) as err:
        train(tiny_train_config(workdir), progress=False, data=FakeData())
    assert str(err.value) == (
        f"Writing {workdir / 'metrics.jsonl'} failed (the disk is full); epoch 2 is checkpointed and earlier files "
        "are intact: free some space and re-run the same command to resume.")
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith('{"epoch": 2') and not lines[1].endswith("}")  # torn
    assert [r["epoch"] for r in RunDir(workdir).read_metrics()] == [1]  # the torn line is not read as a row
    assert rows(workdir)[0] == rows(finished_run)[0]
    monkeypatch.undo()
    train(tiny_train_config(workdir), progress=False, data=FakeData())
    assert_same_run(workdir, finished_run)


@pytest.mark.slow
def test_a_long_run_keeps_memory_flat(tmp_path, tinynet):
    """3,000 train steps of the tiny network through the training loop; resident memory must not grow."""
    import gc

    def rss_mib() -> float:
        gc.collect()
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        pytest.skip("no /proc/self/status on this system")

    data = FakeData(sizes={"train": 8 * 1000, "val": 8, "test": 8})
    train(tiny_train_config(tmp_path / "warm", max_epoch=1), progress=False, data=data)  # compile, warm caches
    before = rss_mib()
    train(tiny_train_config(tmp_path / "long", max_epoch=3), progress=False, data=data)
    growth = rss_mib() - before
    print(f"\nresident memory over 3,000 steps: {before:.0f} MiB -> {before + growth:.0f} MiB ({growth:+.1f} MiB)")
    assert growth < 50, f"memory grew by {growth:.1f} MiB over 3,000 steps"
