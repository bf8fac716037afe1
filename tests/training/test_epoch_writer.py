"""Checkpoints written in the background: the arrays saved are those of the moment of the save even when
the next train step reuses their buffers, a failure is reported with the same sentence, and an epoch's
metrics row is appended only once its checkpoints are complete."""

from __future__ import annotations

import asyncio
import errno
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttlx.runs import checkpoint as ckpt
from ttlx.runs.run_dir import RunDir
from ttlx.training.epoch_writer import EpochWriter


@pytest.fixture
def held_json_writes(monkeypatch):
    """Hold every JSON item's write until the returned event is set (orbax writes it in its own thread)."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    release, save_fn = threading.Event(), handler.JsonCheckpointHandler._save_fn

    async def held(self, x, directory):
        while not release.is_set():
            await asyncio.sleep(0.01)
        return await save_fn(self, x, directory)

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", held)
    yield release
    release.set()


def arrays(value: float) -> dict:
    return {"params.fc.kernel": jnp.full((64, 8), value), "rng": jnp.array([1, 2], jnp.uint32)}


def test_a_save_returns_before_its_files_and_keeps_the_values_of_that_moment(tmp_path, held_json_writes):
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    state = arrays(1.0)
    checkpoints.save(ckpt.LATEST, 1, state, {"epoch": 1})
    assert checkpoints.writing()
    assert not (tmp_path / "latest" / "1").exists()  # not committed while its files are being written
    overwrite = jax.jit(lambda s: jax.tree.map(lambda x: x * 0 + 7, s), donate_argnums=0)
    state = jax.block_until_ready(overwrite(state))  # the next train step takes the buffers over
    held_json_writes.set()
    checkpoints.finish()
    assert not checkpoints.writing()
    restored, meta = checkpoints.restore(ckpt.LATEST, template=arrays(0.0))
    assert meta == {"epoch": 1}
    np.testing.assert_array_equal(restored["params.fc.kernel"], np.full((64, 8), 1.0))
    checkpoints.close()


def test_a_save_that_fails_in_the_background_is_one_sentence_and_keeps_the_step_before(tmp_path, monkeypatch):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    checkpoints = ckpt.RunCheckpoints(tmp_path)
    checkpoints.save(ckpt.LATEST, 1, arrays(1.0), {"epoch": 1})
    checkpoints.finish()

    async def disk_full(self, x, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", disk_full)
    checkpoints.save(ckpt.LATEST, 2, arrays(2.0), {"epoch": 2})  # returns: the failure comes later
    with pytest.raises(ckpt.CheckpointSaveError) as err:
        checkpoints.finish()
    assert str(err.value) == (
        f"Saving the checkpoint of epoch 2 to {tmp_path / 'latest'} failed (the disk is full); the checkpoint "
        "of epoch 1 is kept: free some space and re-run the same command to resume.")
    monkeypatch.undo()
    assert checkpoints.steps(ckpt.LATEST) == [1]
    checkpoints.close()


def test_an_epochs_row_is_logged_and_older_steps_pruned_only_once_its_checkpoints_are_written(
        tmp_path, held_json_writes):
    run = RunDir(tmp_path)
    epochs = EpochWriter(ckpt.RunCheckpoints(run.checkpoints), run)
    epochs.write({"epoch": 1}, (arrays(1.0), {"epoch": 1}), kept={1: 1}, best=(arrays(1.0), {"epoch": 1}))
    epochs.poll()
    assert run.read_metrics() == []  # still being written: no row yet
    held_json_writes.set()
    epochs.settle()
    assert run.read_metrics() == [{"epoch": 1}]
    held_json_writes.clear()
    epochs.write({"epoch": 2}, (arrays(2.0), {"epoch": 2}), kept={1: 1, 2: 1})
    epochs.poll()
    assert run.read_metrics() == [{"epoch": 1}]
    held_json_writes.set()
    while epochs.checkpoints.writing():  # the loop polls after every train step
        epochs.poll()
    epochs.poll()
    assert run.read_metrics() == [{"epoch": 1}, {"epoch": 2}]
    epochs.write({"epoch": 3}, (arrays(3.0), {"epoch": 3}), kept={2: 1, 3: 1})
    epochs.close()  # settles epoch 3: latest 1 is pruned only now, after epoch 3 is complete
    assert run.read_metrics() == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    assert sorted(p.name for p in run.checkpoints.joinpath("latest").iterdir()) == ["2", "3"]
    assert sorted(p.name for p in run.checkpoints.joinpath("best").iterdir()) == ["1"]
