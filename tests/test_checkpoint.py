"""Checkpoints: flat keys, restore into the train state, a failed or killed save keeps the previous step,
and the contract of ``load_run_weights``."""

from __future__ import annotations

import errno
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ttlx import checkpoint as ckpt
from ttlx.errors import WeightsError


def train_state(value: float) -> dict:
    params = {"layer1": [{"kernel": jnp.full((2, 3), value)}], "fc": {"bias": jnp.arange(3.0) + value}}
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    return {"params": params, "opt_state": tx.init(params), "rng": jnp.array([1, 2], jnp.uint32)}


def test_flat_keys_name_state_paths_and_round_trip():
    state = train_state(1.0)
    flat = ckpt.flatten(state)
    assert {"params.layer1.0.kernel", "params.fc.bias", "opt_state.hyperparams.learning_rate",
            "opt_state.inner_state.0.mu.layer1.0.kernel", "rng"} <= set(flat)
    back = ckpt.unflatten_like(train_state(0.0), flat)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), back, state))
    with pytest.raises(WeightsError, match=r"^The checkpoint lacks 1 entries of this model \(e\.g\. 'rng'\)"):
        ckpt.unflatten_like(state, {k: v for k, v in flat.items() if k != "rng"})


def test_latest_restores_arrays_and_json_and_keeps_one_step(tmp_path):
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    for epoch in (1, 2):
        checkpoints.save(ckpt.LATEST, epoch, ckpt.flatten(train_state(epoch)), {"epoch": epoch, "it": {"n": epoch}})
        checkpoints.keep_only(ckpt.LATEST, {epoch})
    template = ckpt.flatten(train_state(0.0))
    arrays, meta = checkpoints.restore(ckpt.LATEST, template)
    assert meta == {"epoch": 2, "it": {"n": 2}}
    np.testing.assert_array_equal(arrays["params.fc.bias"], [2.0, 3.0, 4.0])
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["2"]
    checkpoints.close()


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    checkpoints = ckpt.RunCheckpoints(tmp_path)
    checkpoints.save(ckpt.LATEST, 1, ckpt.flatten(train_state(1.0)), {"epoch": 1})

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full)
    with pytest.raises(ckpt.CheckpointSaveError) as err:
        checkpoints.save(ckpt.LATEST, 2, ckpt.flatten(train_state(2.0)), {"epoch": 2})
    assert str(err.value) == (
        f"Saving the checkpoint of epoch 2 to {tmp_path / 'latest'} failed (the disk is full); the checkpoint "
        "of epoch 1 is kept: free some space and re-run the same command to resume."
    )
    monkeypatch.undo()
    arrays, meta = checkpoints.restore(ckpt.LATEST, ckpt.flatten(train_state(0.0)))
    assert meta["epoch"] == 1 and float(arrays["params.fc.bias"][0]) == 1.0
    checkpoints.close()


def test_a_save_killed_half_way_is_ignored(tmp_path):
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    checkpoints.save(ckpt.LATEST, 1, ckpt.flatten(train_state(1.0)), {"epoch": 1})
    checkpoints.close()
    # what a kill leaves behind: orbax's temporary directory of the next step, partly written
    partial = tmp_path / "latest" / "2.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(tmp_path / "latest" / "1", partial)
    shutil.rmtree(partial / "arrays")
    reopened = ckpt.RunCheckpoints(tmp_path)
    assert reopened.epoch(ckpt.LATEST) == 1
    _, meta = reopened.restore(ckpt.LATEST, ckpt.flatten(train_state(0.0)))
    assert meta == {"epoch": 1}
    reopened.close()


def test_json_encoding_keeps_bytes_and_numpy_scalars():
    state = {"raw": b"\x00\xffgrain", "n": np.int64(7), "nested": [np.float32(0.5), {"k": b"x"}]}
    encoded = ckpt.encode_json(state)
    assert encoded["raw"] == {"__bytes__": "AP9ncmFpbg=="} and encoded["n"] == 7
    assert ckpt.decode_json(encoded) == {"raw": b"\x00\xffgrain", "n": 7, "nested": [0.5, {"k": b"x"}]}


def test_load_run_weights_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(WeightsError, match=r"is not a ttlx run dir \(no config\.json\); pass a run dir written "
                                           r"by `ttlx train`\.$"):
        ckpt.load_run_weights(tmp_path)
    (tmp_path / "config.json").write_text('{"model": {"arch": "resnet50"}}')
    with pytest.raises(WeightsError, match=r"holds no best checkpoint; train it with `ttlx train` first\.$"):
        ckpt.load_run_weights(tmp_path)
