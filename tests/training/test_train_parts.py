"""The pieces of the training recipe against independent references: torch's ReduceLROnPlateau and
losses, Adam parameter groups, LWFT freezing, batch sharding and run names."""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ttlx.config import ModelConfig, TrainConfig
from ttlx.errors import ConfigError
from ttlx.runs.run_dir import run_name
from ttlx.training.freeze import frozen_paths, param_labels, units_to_freeze
from ttlx.training.losses import weighted_binary_cross_entropy, weighted_cross_entropy
from ttlx.training.optim import learning_rate, make_optimizer, with_learning_rate
from ttlx.training.schedule import PlateauTracker
from ttlx.training.sharding import check_batch_size

# torch 2.14: ReduceLROnPlateau(Adam(lr=1e-4), mode='min', factor=0.5, patience=5), stepped with VALUES
VALUES = [1.0, 0.9, 0.89995, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.85] + [0.9] * 12
TORCH_LRS = [1e-4] * 7 + [5e-5] * 9 + [2.5e-5] * 6 + [1.25e-5]

LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.5, 1.5, -2.0]], np.float32)
LABELS = np.array([0, 2, 1, 1])
WEIGHTS = np.array([0.5, 2.0, 1.5], np.float32)
MULTI = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], np.float32)
POS_WEIGHT = np.array([3.0, 0.5, 1.0], np.float32)


def test_plateau_tracker_matches_torch_reduce_lr_on_plateau():
    tracker = PlateauTracker(1e-4, factor=0.5, patience=5)
    lrs = [tracker.step(v) for v in VALUES]
    np.testing.assert_allclose(lrs, TORCH_LRS, rtol=1e-12)
    # 0.89995 is not below 0.9 * (1 - 1e-4): torch's relative threshold counts it as a bad epoch
    assert tracker.best == 0.85 and tracker.num_reductions == 3


def test_plateau_tracker_state_round_trips_through_json():
    import json

    fresh = PlateauTracker(1e-3)
    assert fresh.state_dict()["best"] is None  # JSON has no infinity
    assert math.isinf(PlateauTracker.from_state_dict(json.loads(json.dumps(fresh.state_dict()))).best)
    tracker = PlateauTracker(1e-3, patience=1)
    for v in (1.0, 2.0, 2.0):
        tracker.step(v)
    restored = PlateauTracker.from_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert restored == tracker and restored.lr == 5e-4


def test_weighted_cross_entropy_matches_torch():
    numerator, denominator = weighted_cross_entropy(LOGITS, LABELS, WEIGHTS, np.ones(4, np.float32))
    # torch.nn.CrossEntropyLoss(weight=w)(x, y) on the same numbers
    assert float(numerator / denominator) == pytest.approx(0.5286006331443787, rel=1e-6)


def test_padding_is_left_out_of_the_weighted_mean():
    mask = np.array([1, 1, 1, 0], np.float32)
    numerator, denominator = weighted_cross_entropy(LOGITS, LABELS, WEIGHTS, mask)
    alone = weighted_cross_entropy(LOGITS[:3], LABELS[:3], WEIGHTS, np.ones(3, np.float32))
    assert float(numerator / denominator) == pytest.approx(float(alone[0] / alone[1]), rel=1e-6)
    assert float(denominator) == pytest.approx(0.5 + 1.5 + 2.0)


def test_binary_cross_entropy_with_pos_weight_matches_torch():
    numerator, denominator = weighted_binary_cross_entropy(LOGITS, MULTI, POS_WEIGHT, np.ones(4, np.float32))
    # torch.nn.BCEWithLogitsLoss(pos_weight=p)(x, y)
    assert float(numerator / denominator) == pytest.approx(0.8209406733512878, rel=1e-6)
    label_mask = np.ones((4, 3), np.float32)
    label_mask[0, 0] = 0.0
    numerator, denominator = weighted_binary_cross_entropy(LOGITS, MULTI, POS_WEIGHT, np.ones(4, np.float32),
                                                           label_mask)
    assert float(denominator) == 11.0


def _params():
    return {"backbone": jnp.zeros(3), "frozen": jnp.zeros(2), "fc": jnp.zeros(2)}


def test_adam_groups_freeze_and_divide_the_backbone_learning_rate():
    params = _params()
    labels = {"backbone": "backbone", "frozen": "frozen", "fc": "head"}
    tx = make_optimizer(labels, lr=1e-2, ptl_decay=10.0)
    state = tx.init(params)
    assert learning_rate(state) == pytest.approx(1e-2)
    grads = {k: jnp.ones_like(v) for k, v in params.items()}
    updates, state = tx.update(grads, state, params)
    # Adam's first step moves each parameter by its group's learning rate (times sign of the gradient)
    np.testing.assert_allclose(updates["fc"], -1e-2, rtol=1e-5)
    np.testing.assert_allclose(updates["backbone"], -1e-3, rtol=1e-5)
    np.testing.assert_array_equal(updates["frozen"], 0.0)
    moments = [leaf.shape for leaf in jax.tree.leaves(state.inner_state.inner_states["frozen"])]
    assert moments == []  # frozen parameters keep no Adam moments
    state = with_learning_rate(state, 5e-3)
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["fc"], -5e-3, rtol=1e-4)


def test_weight_decay_is_torch_l2_added_to_the_gradient():
    params = {"w": jnp.array([2.0]), "fc": jnp.array([0.0])}
    tx = make_optimizer({"w": "backbone", "fc": "head"}, lr=1.0, weight_decay=0.5)
    state = tx.init(params)
    grads = {"w": jnp.array([-1.0]), "fc": jnp.array([1.0])}
    updates, _ = tx.update(grads, state, params)
    # g + wd * w = -1 + 1 = 0 for w: Adam leaves it in place
    assert float(updates["w"][0]) == pytest.approx(0.0, abs=1e-6)


def _tiny(tinynet, **kwargs):
    cfg = ModelConfig(arch="tinynet", head="pool", num_classes=3, image_size=32, **kwargs)
    return cfg, nnx.eval_shape(lambda: tinynet.build(cfg, nnx.Rngs(0)))


def test_freeze_until_counts_blocks_or_units(tinynet):
    cfg = ModelConfig(arch="tinynet", trunc=-1, head="pool", num_classes=3, image_size=32)
    assert [units_to_freeze(tinynet, cfg, k) for k in (0, 1, 2)] == [1, 2, 4]
    layerwise = ModelConfig(arch="tinynet", trunc=3, layerwise=True, head="pool", num_classes=3, image_size=32)
    assert units_to_freeze(tinynet, layerwise, 3) == 4
    with pytest.raises(ConfigError, match=r"^--freeze-until 3 does not fit tinynet truncated at -1; choose one "
                                          r"of 0, 1, 2 \(0 freezes the stem only\)\.$"):
        units_to_freeze(tinynet, cfg, 3)
    with pytest.raises(ConfigError, match="does not fit a layer-wise model with 3 units; choose 0 to 3"):
        units_to_freeze(tinynet, layerwise, 4)


def test_frozen_variables_are_the_stem_and_first_block(tinynet):
    cfg, model = _tiny(tinynet)
    frozen = frozen_paths(model, tinynet, cfg, 1)
    expected = {("conv1", "kernel"), ("layer1", 0, "conv", "kernel")}
    for bn in (("bn1",), ("layer1", 0, "bn")):
        expected |= {(*bn, name) for name in ("scale", "bias", "mean", "var")}
    assert frozen == expected
    assert frozen_paths(model, tinynet, cfg, None) == set()
    labels = param_labels(nnx.split(model, nnx.Param, ...)[1], frozen, "fc")
    flat = {path: label for path, label in nnx.to_flat_state(labels)}
    assert flat[("layer1", 0, "conv", "kernel")].get_value() == "frozen"
    assert flat[("layer2", 0, "conv", "kernel")].get_value() == "backbone"
    assert flat[("fc", "kernel")].get_value() == "head"


@pytest.mark.parametrize("freeze_until, params", [(0, 9_536), (1, 225_344)])
def test_resnet50_lwft_freezes_the_paper_parameter_counts(freeze_until, params):
    from ttlx.models import get_architecture

    arch = get_architecture("resnet50")
    cfg = ModelConfig(arch="resnet50", trunc=-1, head="pool", num_classes=2, image_size=64)
    model = nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0)))
    frozen = frozen_paths(model, arch, cfg, freeze_until)
    sizes = {path: int(np.prod(v.shape)) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    # ANCHORS.md section 3: stem 9,536 parameters; stem + layer1 225,344
    assert sum(size for path, size in sizes.items() if path in frozen) == params


def test_a_batch_that_does_not_divide_across_devices_is_refused():
    mesh = types.SimpleNamespace(devices=np.empty(4))
    check_batch_size(64, mesh)
    with pytest.raises(ConfigError, match=r"^Batch size 30 does not divide across 4 devices; choose a multiple "
                                          r"of 4 \(e\.g\. --bs 32\)\.$"):
        check_batch_size(30, mesh)


def test_run_names_hold_every_non_default_option():
    model = ModelConfig(arch="resnet50", trunc=11, layerwise=True)
    assert run_name(TrainConfig(), model) == "resnet50_lw11_exp1_sub100"
    cfg = TrainConfig(exp=2, sub=20, pretrained="random", head="pool", image_size=32, freeze_until=1,
                      ptl_decay=10.0, lr=1e-3, seed=3, batch_size=32)
    name = run_name(cfg, ModelConfig(arch="resnet50", trunc=-1))
    assert name == "resnet50_t-1_exp2_sub20_random_pool_32px_freeze1_ptl10_bs32_lr0.001_seed3"


@pytest.mark.slow
def test_the_train_state_holds_plain_arrays_under_the_checkpoint_keys_of_the_models_variables(tinynet):
    from ttlx.models import create_model
    from ttlx.runs import checkpoint as ckpt
    from ttlx.training.sharding import data_mesh, shard_batch
    from ttlx.training.steps import init_state, make_steps, model_arrays

    model = create_model("tinynet", 1, num_classes=3, head="pool", image_size=32, seed=0)
    params, rest = model_arrays(model)
    labels = param_labels(params, set(), tinynet.classifier_key)
    tx = make_optimizer(labels, lr=1e-2)
    mesh = data_mesh()
    steps = make_steps(model, set(), tx, np.ones(3, np.float32), False, mesh)
    state = init_state(model, tx, 0, mesh)
    batch = shard_batch({"image": np.zeros((4, 32, 32, 3), np.uint8), "label": np.array([0, 1, 2, 0], np.int32),
                         "mask": np.ones(4, np.float32)}, mesh)
    stepped, _ = steps.train(state, batch)

    def is_variable(x):
        return isinstance(x, nnx.Variable)

    for tree in (state, stepped):  # a jitted call then flattens arrays, not ~600 Variables (RESULTS section 8)
        assert not any(map(is_variable, jax.tree.leaves(tree, is_leaf=is_variable)))
        assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(tree))
    _, variables, batch_stats = nnx.split(model, nnx.Param, ...)
    assert ckpt.model_state_arrays(stepped["params"], stepped["rest"]).keys() == (
        ckpt.model_state_arrays(variables, batch_stats).keys())  # old checkpoints still load and resume
    assert {label for label in jax.tree.leaves(labels)} == {"backbone", "head"}
