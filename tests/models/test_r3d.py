"""r3d_18: torchvision's parameter count, truncation points, heads and parity with torchvision.

The golden outputs come from ``scripts/make_golden_3d.py r3d_18`` (torchvision 0.29.1 filled with numpy
weights); here the same weights are rebuilt without torch and loaded through the generic torchvision walk.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from parity_checks import TOLERANCE, errors_at_points, relative_error

from ttlx.config import ModelConfig
from ttlx.cost.model_cost import count_params
from ttlx.errors import ConfigError
from ttlx.models import get_architecture, resolve_config
from ttlx.models.abstract import abstract_model
from ttlx.models.weights.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_golden_3d", ROOT / "scripts" / "make_golden_3d.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def build(trunc=-1, layerwise=False, head=None, classes=2, size=112, window=16):
    cfg = ModelConfig(arch="r3d_18", trunc=trunc, layerwise=layerwise, head=head, num_classes=classes,
                      image_size=size, window=window)
    return abstract_model(get_architecture("r3d_18"), cfg)


def out_shape(model, size=112):
    def forward(state, x):
        net = nnx.merge(graphdef, state)
        net.eval()
        return net(x)

    graphdef, state = nnx.split(model)
    return jax.eval_shape(forward, state, jax.ShapeDtypeStruct(model.input_shape(size), "float32")).shape


def test_parameters_are_torchvisions_with_the_kinetics_head():
    assert count_params(build(head="pool", classes=400))[0] == 33_371_472


@pytest.mark.parametrize(("trunc", "shape"), [(1, (1, 16, 56, 56, 64)), (2, (1, 8, 28, 28, 128)),
                                              (3, (1, 4, 14, 14, 256)), (-1, (1, 2, 7, 7, 512))])
def test_block_wise_points_end_after_their_stage(trunc, shape):
    assert out_shape(build(trunc)) == shape


def test_layer_wise_points_count_basic_blocks():
    arch = get_architecture("r3d_18")
    assert arch.num_units == 8 and arch.spatial_dims == 3
    assert [name for name, _ in build(3, layerwise=True).units()] == ["stem", "layer1.0", "layer1.1", "layer2.0"]
    assert count_params(build(8, layerwise=True))[0] == count_params(build(-1))[0]
    with pytest.raises(ConfigError, match="no layer-wise truncation point 9"):
        resolve_config("r3d_18", 9, layerwise=True)


def test_heads_pool_flatten_and_none():
    assert out_shape(build(2, head="pool", classes=3)) == (1, 3)
    flat = build(2, head="flatten", classes=3)
    assert flat.fc.kernel.get_value().shape == (128 * 8 * 28 * 28, 3)
    assert out_shape(flat) == (1, 3)


@pytest.fixture(scope="module")
def recorded():
    manifest, outputs = golden.load_golden("r3d_18")
    x = golden.golden_input("r3d_18").transpose(0, 2, 3, 4, 1)  # NCDHW -> NDHWC
    return golden.golden.golden_state_dict(manifest), outputs, x


def loaded(state_dict, **kw):
    # configured for 32 px and 4 slices; the pooled and headless networks take the 16-px golden input as well
    arch, cfg = resolve_config("r3d_18", image_size=32, window=4, **kw)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))
    model = nnx.merge(graphdef, jax.tree.map(lambda s: np.full(s.shape, np.nan, s.dtype), state))
    load_pretrained(model, arch, cfg, state_dict)
    model.eval()
    return model


def test_golden_file_covers_every_block_point():
    _, outputs = golden.load_golden("r3d_18")
    assert set(outputs) == {*golden.POINTS["r3d_18"], "logits"}
    assert sum("block-wise" in what for what in golden.POINTS["r3d_18"].values()) == 4


def test_whole_network_matches_torchvision_at_every_point(recorded):
    state_dict, outputs, x = recorded
    model = loaded(state_dict, num_classes=400, head="pool")
    errors = errors_at_points(model, x, outputs, golden.POINTS["r3d_18"], last="layer4.1")
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize(("trunc", "layerwise", "point"), [(2, False, "layer2.1"), (5, True, "layer3.0")])
def test_truncated_network_ends_at_the_recorded_point(recorded, trunc, layerwise, point):
    state_dict, outputs, x = recorded
    model = loaded(state_dict, trunc=trunc, layerwise=layerwise, head=None)
    features = jax.device_get(nnx.jit(lambda m, x: m(x))(model, x))
    assert features.shape == outputs[point].shape
    assert relative_error(features, outputs[point]) <= TOLERANCE
