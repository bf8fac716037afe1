"""torchvision <-> Flax key and layout conversion, and the strict merge into truncated and slimmed models."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from ttlx.errors import WeightsError
from ttlx.models import resolve_config
from ttlx.models.weights import convert


def build(arch_name: str, **kw):
    """A model with zero weights, made from the abstract one: no random-init compiles; loads overwrite it."""
    arch, cfg = resolve_config(arch_name, **kw)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))
    return nnx.merge(graphdef, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state))


def shapes(arch_name: str, **kw) -> dict[str, tuple]:
    arch, cfg = resolve_config(arch_name, **kw)
    return convert.variable_shapes(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))


def torch_state(arch_name: str, seed: int = 1, **kw) -> dict[str, np.ndarray]:
    """A torchvision-format state dict with random values for the network ``kw`` describes."""
    rng = np.random.default_rng(seed)
    flat = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes(arch_name, **kw).items()}
    state = convert.to_torchvision(flat)
    for key in [k for k in state if k.endswith("running_var")]:
        state[key.replace("running_var", "num_batches_tracked")] = np.asarray(5, np.int64)
    return state


def merge(arch_name: str, state, **kw):
    model = build(arch_name, **kw)
    plan = convert.merge(model, convert.from_torchvision(state), shapes(arch_name, head=None),
                         classifier_key="fc", origin="the file", target="the model")
    return model, plan


def test_layouts_follow_torch_conventions():
    conv = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)  # O, I, H, W
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)  # out, in
    flat = convert.from_torchvision({"c.weight": conv, "fc.weight": dense, "bn.weight": np.ones(3),
                                     "bn.running_mean": np.zeros(3), "bn.running_var": np.ones(3)})
    assert sorted(flat) == ["bn.mean", "bn.scale", "bn.var", "c.kernel", "fc.kernel"]
    assert flat["c.kernel"].shape == (5, 7, 3, 2)  # H, W, I, O
    assert flat["c.kernel"][4, 6, 2, 1] == conv[1, 2, 4, 6]
    assert flat["fc.kernel"][2, 1] == dense[1, 2]
    back = convert.to_torchvision(flat)
    assert np.array_equal(back["c.weight"], conv) and np.array_equal(back["fc.weight"], dense)
    assert sorted(back) == ["bn.running_mean", "bn.running_var", "bn.weight", "c.weight", "fc.weight"]


def test_legacy_densenet_and_data_parallel_keys_are_renamed():
    one = np.ones(4, np.float32)
    flat = convert.from_torchvision({
        "features.denseblock1.denselayer1.norm.1.weight": one,
        "features.denseblock1.denselayer1.conv.2.weight": np.ones((4, 4, 3, 3), np.float32),
        "features.transition1.norm.running_var": one,
        "module.features.denseblock2.denselayer12.norm.2.running_mean": one,
        "features.norm0.num_batches_tracked": np.asarray(3),
    })
    assert sorted(flat) == ["features.denseblock1.denselayer1.conv2.kernel",
                            "features.denseblock1.denselayer1.norm1.scale",
                            "features.denseblock2.denselayer12.norm2.mean", "features.transition1.norm.var"]


def test_whole_model_loads_every_value_and_its_classifier(tinynet):
    state = torch_state("tinynet", num_classes=5)
    model, plan = merge("tinynet", state, num_classes=5)
    loaded = convert.model_flat(model)
    assert plan.dropped == {} and plan.fresh == []
    assert loaded.keys() == convert.from_torchvision(state).keys()
    assert np.array_equal(loaded["layer2.1.conv.kernel"], state["layer2.1.conv.weight"].transpose(2, 3, 1, 0))
    assert np.array_equal(loaded["bn1.var"], state["bn1.running_var"])
    assert np.array_equal(loaded["fc.kernel"], state["fc.weight"].T)


def test_truncated_model_drops_unbuilt_stages_and_a_misfit_head_by_name(tinynet):
    state = torch_state("tinynet", num_classes=5)
    model, plan = merge("tinynet", state, trunc=1, num_classes=3)
    assert sorted(plan.dropped) == ["classifier", "truncated"]
    assert sorted(plan.dropped["classifier"]) == ["fc.bias", "fc.kernel"]
    assert {k.split(".")[0] for k in plan.dropped["truncated"]} == {"layer2", "layer3"}
    assert sorted(plan.fresh) == ["fc.bias", "fc.kernel"]
    assert np.array_equal(convert.model_flat(model)["layer1.0.bn.scale"], state["layer1.0.bn.weight"])


def test_missing_unexpected_and_misshapen_keys_are_listed_both_ways(tinynet):
    state = torch_state("tinynet", head=None)
    del state["layer1.0.bn.bias"]
    state["layer9.0.conv.weight"] = np.ones((1, 1, 1, 1), np.float32)
    state["bn1.weight"] = np.ones(7, np.float32)
    with pytest.raises(WeightsError) as err:
        merge("tinynet", state, head=None)
    assert str(err.value) == (
        "the file does not fit the model: in the model, not in the weights: layer1.0.bn.bias; "
        "in the weights, not in the model: layer9.0.conv.kernel; "
        "shapes differ: bn1.scale model (8,) vs weights (7,).")


def test_weights_of_another_architecture_say_so(tinynet):
    state = {"features.conv0.weight": np.ones((64, 3, 7, 7), np.float32)}
    expected = (r"^the file holds no weights for the model: none of its 1 keys fits "
                r"\(the model expects e\.g\. bn1\.bias, .* \(\+\d+ more\)\); give")
    with pytest.raises(WeightsError, match=expected):
        merge("tinynet", state, head=None)


def test_slimmed_stages_stay_random_and_their_source_keys_are_dropped():
    # stem + 5 bottlenecks (layer1, two of layer2), stages from 1 (layer2, counted from 0) at half width
    cut = {"trunc": 5, "layerwise": True, "num_classes": 2}
    state = torch_state("resnet50", **cut)
    model = build("resnet50", slim_from=1, **cut)
    reference = shapes("resnet50", **cut, head=None)
    slimmed = convert.slimmed_keys(model, reference)
    assert {k.split(".")[0] for k in slimmed} == {"layer2"}
    plan = convert.merge(model, convert.from_torchvision(state), reference, classifier_key="fc", origin="f",
                         target="m", slimmed=slimmed)
    after = convert.model_flat(model)
    assert sorted(plan.dropped) == ["classifier", "slimmed"]
    assert sorted(plan.dropped["slimmed"]) == sorted(slimmed)
    assert not after["layer2.1.conv2.kernel"].any()  # still as built (zeros here), not the source's
    assert np.array_equal(after["layer1.2.conv3.kernel"], state["layer1.2.conv3.weight"].transpose(2, 3, 1, 0))


def test_a_slimmed_densenet_block_is_fresh_from_its_first_layer():
    # denseblock2's first layer keeps its input width (128) under slimming, yet belongs to the slim stage
    arch, cfg = resolve_config("densenet201", trunc=8, layerwise=True, head=None, slim_from=1)
    reference = shapes("densenet201", trunc=8, layerwise=True, head=None)
    slimmed = convert.slimmed_keys(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))), reference)
    first = "features.denseblock2.denselayer1.norm1.scale"
    assert reference[first] == (128,) and first in slimmed
    assert {k.rsplit(".", 2)[0] for k in slimmed} == {"features.denseblock2.denselayer1",
                                                      "features.denseblock2.denselayer2"}


def test_flatten_head_matches_a_torch_linear_over_nchw_features(tinynet):
    state = torch_state("tinynet", trunc=1, head="flatten", num_classes=3, image_size=32)
    model, _ = merge("tinynet", state, trunc=1, head="flatten", num_classes=3, image_size=32)
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    features = np.asarray(model.forward_features(x))
    expected = features.transpose(0, 3, 1, 2).reshape(2, -1) @ state["fc.weight"].T + state["fc.bias"]
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: model(v))(x)), expected, rtol=1e-5, atol=1e-5)
