"""penet: the published model's parameter counts, truncation points, heads, stochastic depth, the folded
stem, and parity with the published PENet code.

The golden outputs come from ``scripts/make_golden_3d.py penet CHECKOUT`` (the PENet code run once from a
local checkout and filled with numpy weights); here the same weights are rebuilt without torch, renamed
as PENet checkpoints are, and loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from parity_checks import TOLERANCE, errors_at_points, relative_error

from ttlx.config import ModelConfig
from ttlx.cost.macs import count_jaxpr_macs
from ttlx.cost.model_cost import count_params
from ttlx.errors import ConfigError
from ttlx.models import get_architecture, layers3d, penet, resolve_config
from ttlx.models.abstract import abstract_model
from ttlx.models.ops import xla_convolutions
from ttlx.models.weights.penet_checkpoint import ttlx_keys
from ttlx.models.weights.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_golden_3d", ROOT / "scripts" / "make_golden_3d.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def build(trunc=-1, layerwise=False, head=None, classes=1, size=192, window=24, **kw):
    cfg = ModelConfig(arch="penet", trunc=trunc, layerwise=layerwise, head=head, num_classes=classes,
                      image_size=size, window=window, **kw)
    return abstract_model(get_architecture("penet"), cfg)


@pytest.mark.parametrize(("trunc", "params"), [(-1, 28_398_705), (1, 325_105), (2, 1_803_121), (3, 10_503_921)])
def test_parameter_counts_with_a_one_output_head(trunc, params):
    assert count_params(build(trunc, head="pool"))[0] == params


def test_a_window_ends_as_2048x2x6x6_and_each_stage_halves_it():
    assert build(-1).feature_shape(192) == (2048, 2, 6, 6)
    assert build(1).feature_shape(192) == (256, 12, 48, 48)
    assert build(3).feature_shape(192) == (1024, 3, 12, 12)


def test_layer_wise_points_count_bottlenecks():
    model = build(4, layerwise=True)
    assert [name for name, _ in model.units()][-2:] == ["encoders.0.penet_blocks.2", "encoders.1.penet_blocks.0"]
    assert count_params(build(16, layerwise=True))[0] == count_params(build(-1))[0]
    assert count_params(build(3, layerwise=True))[0] == count_params(build(1))[0]
    with pytest.raises(ConfigError, match="choose a number of bottlenecks from 0 to 16"):
        resolve_config("penet", 17, layerwise=True)


def test_flatten_head_reads_the_whole_map():
    model = build(1, head="flatten", classes=2, size=64, window=8)
    assert model.fc.kernel.get_value().shape == (256 * 4 * 16 * 16, 2)


def test_survival_falls_linearly_to_one_half():
    assert penet.survival_probability(0) == 1.0
    assert penet.survival_probability(8) == 0.75
    assert penet.survival_probability(15) == pytest.approx(1 - 15 / 32)
    kept = build(-1)
    blocks = [fn for _, fn in kept.units()][1:]
    assert blocks[0].drop_key is None and all(b.drop_key is not None for b in blocks[1:])
    assert all(b.drop_key is None for b in list(build(-1, stochastic_depth=False).units())[1:]
               if isinstance(b, penet.Bottleneck))


def small_block(survival: float) -> penet.Bottleneck:
    return penet.Bottleneck(64, 128, 2, survival, stochastic=True, dtype=jnp.float32, rngs=nnx.Rngs(0))


def test_a_dropped_block_returns_its_skip_and_eval_runs_it_whole():
    block = small_block(0.0)
    block.norm3.scale.set_value(jnp.ones(256))  # so the residual branch shows in the output
    x = jax.random.normal(jax.random.key(1), (1, 2, 4, 4, 64))
    skip = block.down_sample[1](block.down_sample[0](x))
    run = nnx.jit(lambda block, x: block(x))
    block.train()
    np.testing.assert_allclose(run(block, x), skip, rtol=1e-5, atol=1e-6)  # no LeakyReLU, no rescaling
    block.eval()
    whole = run(block, x)
    np.testing.assert_allclose(whole, nnx.jit(lambda b, x, s: b.residual(x, s))(block, x, skip), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(whole - skip).max()) > 0.1


def test_draws_advance_the_key_in_training():
    block = small_block(0.5)
    block.train()
    x = jax.random.normal(jax.random.key(1), (1, 2, 4, 4, 64))
    before = np.asarray(block.drop_key.get_value())
    block(x)
    assert not np.array_equal(before, block.drop_key.get_value())


def test_the_folded_stem_equals_the_expanded_one():
    conv = layers3d.conv3d(3, 8, 7, stride=(1, 2, 2), pad=3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (2, 4, 16, 16, 1))
    folded = layers3d.stem_conv(conv, x)
    expanded = layers3d.stem_conv(conv, jnp.repeat(x, 3, axis=-1))
    assert folded.shape == expanded.shape == (2, 4, 8, 8, 8)
    assert float(jnp.abs(folded - expanded).max() / jnp.abs(expanded).max()) < 1e-5


def conv_linear_macs(model, channels: int) -> int:
    graphdef, state = nnx.split(model)

    def forward(state, x):
        net = nnx.merge(graphdef, state)
        net.eval()
        return net(x)

    with xla_convolutions():
        closed = jax.make_jaxpr(forward)(state, jax.ShapeDtypeStruct((1, 24, 192, 192, channels), "float32"))
    flags = [False] * (len(closed.jaxpr.invars) - 1) + [True]
    return count_jaxpr_macs(closed.jaxpr, flags).conv_linear


def test_a_window_costs_32_9_gmacs_expanded_and_the_stem_14_6():
    whole = build(-1, head="pool")
    stem_only = build(0, layerwise=True)
    assert conv_linear_macs(whole, 3) / 1e9 == pytest.approx(32.87, abs=0.01)
    stem = conv_linear_macs(stem_only, 3)
    assert stem / 1e9 == pytest.approx(14.57, abs=0.01)
    assert conv_linear_macs(whole, 1) == conv_linear_macs(whole, 3) - stem * 2 // 3  # folding: a third


@pytest.fixture(scope="module")
def recorded():
    manifest, outputs = golden.load_golden("penet")
    state = golden.golden.golden_state_dict(manifest)
    x = golden.golden_input("penet").transpose(0, 2, 3, 4, 1)  # NCDHW -> NDHWC, one channel
    return ttlx_keys({"module." + k: v for k, v in state.items()}), outputs, x


def loaded(state_dict, **kw):
    # configured for 32 px and 8 slices; pooled and headless networks take the 16-px golden input as well
    arch, cfg = resolve_config("penet", image_size=32, window=8, **kw)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))

    def nan(leaf):
        fill = 0 if jax.dtypes.issubdtype(leaf.dtype, jnp.integer) else np.nan  # stochastic-depth keys
        return np.full(leaf.shape, fill, leaf.dtype)

    model = nnx.merge(graphdef, jax.tree.map(nan, state))
    load_pretrained(model, arch, cfg, state_dict)
    model.eval()
    return model


def test_golden_file_covers_every_block_point():
    _, outputs = golden.load_golden("penet")
    assert set(outputs) == {*golden.POINTS["penet"], "logits"}
    assert sum("block-wise" in what for what in golden.POINTS["penet"].values()) == 4


@pytest.mark.slow  # 2-15 s of compiling on 2 shared cores; the truncated networks below run every time
def test_whole_network_matches_the_published_code_at_every_point(recorded):
    state_dict, outputs, x = recorded
    model = loaded(state_dict, num_classes=1, head="pool")
    errors = errors_at_points(model, x, outputs, golden.POINTS["penet"], last="encoders.3.penet_blocks.2")
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize(("trunc", "layerwise", "point"), [(1, False, "encoders.0.penet_blocks.2"),
                                                           (0, True, "stem")])
def test_truncated_network_ends_at_the_recorded_point(recorded, trunc, layerwise, point):
    state_dict, outputs, x = recorded
    model = loaded(state_dict, trunc=trunc, layerwise=layerwise, head=None)
    features = jax.device_get(nnx.jit(lambda m, x: m(x))(model, x))
    assert features.shape == outputs[point].shape
    assert relative_error(features, outputs[point]) <= TOLERANCE


def test_freeze_until_reads_the_stem_and_stages_of_windows():
    from ttlx.training.freeze import frozen_paths

    arch, cfg = resolve_config("penet", 2, head="pool", num_classes=2, image_size=32, window=8)
    paths = frozen_paths(abstract_model(arch, cfg), arch, cfg, 1)
    stages = {path[1] for path in paths if path[0] == "encoders"}
    assert stages == {0} and ("in_conv", 0, "kernel") in paths and not any(p[0] == "fc" for p in paths)
