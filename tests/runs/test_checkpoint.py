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

from ttlx.errors import WeightsError
from ttlx.runs import checkpoint as ckpt
from ttlx.runs import state_arrays


def train_state(value: float) -> dict:
    params = {"layer1": [{"kernel": jnp.full((2, 3), value)}], "fc": {"bias": jnp.arange(3.0) + value}}
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    return {"params": params, "opt_state": tx.init(params), "rng": jnp.array([1, 2], jnp.uint32)}


def test_flat_keys_name_state_paths_and_round_trip():
    state = train_state(1.0)
    flat = state_arrays.flatten(state)
    assert {"params.layer1.0.kernel", "params.fc.bias", "opt_state.hyperparams.learning_rate",
            "opt_state.inner_state.0.mu.layer1.0.kernel", "rng"} <= set(flat)
    back = state_arrays.unflatten_like(train_state(0.0), flat)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), back, state))
    with pytest.raises(WeightsError, match=r"^The checkpoint lacks 1 entries of this model \(e\.g\. 'rng'\)"):
        state_arrays.unflatten_like(state, {k: v for k, v in flat.items() if k != "rng"})


def test_latest_restores_arrays_and_json_and_keeps_one_step(tmp_path):
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    for epoch in (1, 2):
        state = state_arrays.flatten(train_state(epoch))
        checkpoints.save(ckpt.LATEST, epoch, state, {"epoch": epoch, "it": {"n": epoch}})
        checkpoints.keep_only(ckpt.LATEST, {epoch})
    template = state_arrays.flatten(train_state(0.0))
    arrays, meta = checkpoints.restore(ckpt.LATEST, template)
    assert meta == {"epoch": 2, "it": {"n": 2}}
    np.testing.assert_array_equal(arrays["params.fc.bias"], [2.0, 3.0, 4.0])
    assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["2"]
    checkpoints.close()


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    checkpoints = ckpt.RunCheckpoints(tmp_path)
    checkpoints.save(ckpt.LATEST, 1, state_arrays.flatten(train_state(1.0)), {"epoch": 1})

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full)
    with pytest.raises(ckpt.CheckpointSaveError) as err:
        checkpoints.save(ckpt.LATEST, 2, state_arrays.flatten(train_state(2.0)), {"epoch": 2})
    assert str(err.value) == (
        f"Saving the checkpoint of epoch 2 to {tmp_path / 'latest'} failed (the disk is full); the checkpoint "
        "of epoch 1 is kept: free some space and re-run the same command to resume."
    )
    monkeypatch.undo()
    arrays, meta = checkpoints.restore(ckpt.LATEST, state_arrays.flatten(train_state(0.0)))
    assert meta["epoch"] == 1 and float(arrays["params.fc.bias"][0]) == 1.0
    checkpoints.close()


def test_a_save_killed_half_way_is_ignored(tmp_path):
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    checkpoints.save(ckpt.LATEST, 1, state_arrays.flatten(train_state(1.0)), {"epoch": 1})
    checkpoints.close()
    # what a kill leaves behind: orbax's temporary directory of the next step, partly written
    partial = tmp_path / "latest" / "2.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(tmp_path / "latest" / "1", partial)
    shutil.rmtree(partial / "arrays")
    reopened = ckpt.RunCheckpoints(tmp_path)
    assert reopened.epoch(ckpt.LATEST) == 1
    _, meta = reopened.restore(ckpt.LATEST, state_arrays.flatten(train_state(0.0)))
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


def mixed_state() -> dict:
    return {"w": jnp.arange(6.0).reshape(2, 3), "h": jnp.asarray([0.1, -2.5, 3.0], jnp.bfloat16),
            "count": jnp.asarray(7, jnp.int32), "rng": jnp.asarray([1, 2**32 - 1], jnp.uint32),
            "scale": jnp.asarray(0.25), "empty": jnp.zeros((0, 4))}


def test_a_step_holds_one_packed_array_per_dtype_and_restores_every_entry_bit_for_bit(tmp_path):
    state = mixed_state()
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    checkpoints.save(ckpt.LATEST, 1, state, {"epoch": 1})
    checkpoints.finish()
    stored = checkpoints.managers[ckpt.LATEST].item_metadata(1)["arrays"]
    assert sorted(stored) == ["packed.bfloat16", "packed.float32", "packed.int32", "packed.uint32"]
    assert stored["packed.float32"].shape == (6 + 1,)  # w and scale; the empty array adds nothing

    host, meta = checkpoints.restore(ckpt.LATEST)
    assert meta == {"epoch": 1} and list(host) == list(state)
    for key, value in state.items():
        assert isinstance(host[key], np.ndarray) and host[key].dtype == value.dtype
        np.testing.assert_array_equal(host[key], np.asarray(value), strict=True)

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = {k: jax.device_put(jnp.zeros_like(v), sharding) for k, v in state.items()}
    placed, _ = checkpoints.restore(ckpt.LATEST, template)
    for key, value in state.items():
        assert isinstance(placed[key], jax.Array) and placed[key].sharding == sharding
        np.testing.assert_array_equal(np.asarray(placed[key]), np.asarray(value), strict=True)
    checkpoints.close()


def test_pack_and_unpack_are_inverse_and_keep_the_key_order():
    state = mixed_state()
    packed, layout = state_arrays.pack(state)
    assert {k: v.dtype.name for k, v in packed.items()} == {
        "packed.float32": "float32", "packed.bfloat16": "bfloat16", "packed.int32": "int32", "packed.uint32": "uint32"}
    back = state_arrays.unpack(packed, layout)
    assert list(back) == list(state)
    assert all(np.array_equal(back[k], np.asarray(v)) and back[k].shape == v.shape for k, v in state.items())
    short = {**packed, "packed.float32": packed["packed.float32"][:-1]}
    with pytest.raises(ValueError, match=r"^the packed float32 array holds 6 values, too few for 'scale'$"):
        state_arrays.unpack(short, layout)


def test_a_restore_into_a_template_of_another_shape_or_without_an_entry_is_refused(tmp_path):
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    checkpoints.save(ckpt.LATEST, 1, mixed_state(), {"epoch": 1})
    template = {k: jnp.zeros_like(v) for k, v in mixed_state().items()}
    with pytest.raises(ValueError, match=r"^'w' has shape \[2, 3\] in the checkpoint, \[3, 2\] here$"):
        checkpoints.restore(ckpt.LATEST, {**template, "w": jnp.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"^the checkpoint lacks 'extra'$"):
        checkpoints.restore(ckpt.LATEST, {**template, "extra": jnp.zeros(2)})
    checkpoints.close()


def test_a_step_written_before_packing_still_restores(tmp_path):
    import orbax.checkpoint as ocp

    flat = state_arrays.flatten(train_state(3.0))
    checkpoints = ckpt.RunCheckpoints(tmp_path)
    # the earlier format: one orbax array per key and no layout item
    checkpoints.managers[ckpt.LATEST].save(2, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave({"epoch": 2})))
    checkpoints.managers[ckpt.LATEST].wait_until_finished()
    assert not (tmp_path / "latest" / "2" / "layout").exists()
    placed, meta = checkpoints.restore(ckpt.LATEST, state_arrays.flatten(train_state(0.0)))
    assert meta == {"epoch": 2} and sorted(placed) == sorted(flat)
    np.testing.assert_array_equal(np.asarray(placed["params.fc.bias"]), [3.0, 4.0, 5.0])
    host, _ = checkpoints.restore(ckpt.LATEST)
    assert isinstance(host["rng"], np.ndarray)
    np.testing.assert_array_equal(host["opt_state.inner_state.0.mu.layer1.0.kernel"], np.zeros((2, 3)))
    checkpoints.close()
