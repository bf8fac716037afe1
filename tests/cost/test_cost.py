"""Parameter and MAC counts against ANCHORS.md section 3, the counter against hand counts, and latency."""

import json
import math

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.cost.macs import MacCount, count_jaxpr_macs, count_macs
from ttlx.cost.model_cost import count_params, model_cost
from ttlx.models import layers, resolve_config
from ttlx.models.abstract import abstract_model, zero_weight_model

# ANCHORS.md section 3 at 224x224: (model, options, params, GMACs conv+linear, GMACs ptflops, output CxHxW)
ANCHOR_ROWS = [
    ("resnet50", dict(trunc=0, layerwise=True, head=None), 9_536, 0.118, 0.121, (64, 56, 56)),
    ("resnet50", dict(trunc=1, head=None), 225_344, 0.786, 0.802, (256, 56, 56)),
    ("resnet50", dict(trunc=2, head=None), 1_444_928, 1.814, 1.838, (512, 28, 28)),
    ("resnet50", dict(trunc=3, head=None), 8_543_296, 3.278, 3.309, (1024, 14, 14)),
    ("resnet50", dict(trunc=-1, head=None), 23_508_032, 4.087, 4.120, (2048, 7, 7)),
    ("resnet50", dict(trunc=-1, head="pool", num_classes=1000), 25_557_032, 4.089, 4.122, None),
    ("resnet50", dict(trunc=11, layerwise=True, head=None), 6_308_928, 2.841, 2.870, (1024, 14, 14)),
    ("densenet201", dict(trunc=1, head=None), 377_856, 1.261, 1.283, (128, 28, 28)),
    ("densenet201", dict(trunc=2, head=None), 1_429_632, 2.077, 2.112, (256, 14, 14)),
    ("densenet201", dict(trunc=3, head=None), 11_110_528, 3.952, 4.021, (896, 7, 7)),
    ("densenet201", dict(trunc=-1, head=None), 18_092_928, 4.289, 4.365, (1920, 7, 7)),
    ("densenet201", dict(trunc=-1, head="pool", num_classes=1000), 20_013_928, 4.291, 4.367, None),
    # DenseNet121: torchvision's 7,978,856 parameters and 2.83 GFLOPS; ptflops reports 2.88 GMac
    ("densenet121", dict(trunc=3, head=None), 4_793_728, 2.729, 2.775, (512, 7, 7)),
    ("densenet121", dict(trunc=-1, head="pool", num_classes=1000), 7_978_856, 2.834, 2.883, None),
]

# ANCHORS.md section 3: ResNet50 backbone parameters after bottleneck 1..16
CUMULATIVE_RESNET50 = [
    84_544, 154_944, 225_344, 604_736, 884_800, 1_164_864, 1_444_928, 2_957_376, 4_074_560, 5_191_744,
    6_308_928, 7_426_112, 8_543_296, 14_582_848, 19_045_440, 23_508_032,
]


def within(value: float, anchor: float, rel: float = 0.005) -> bool:
    return abs(value - anchor) <= rel * anchor


@pytest.mark.parametrize("name,options,params,gmacs,gmacs_ptflops,chw", ANCHOR_ROWS,
                         ids=[f"{r[0]}-{r[1]}" for r in ANCHOR_ROWS])
def test_counts_match_the_anchor_table(name, options, params, gmacs, gmacs_ptflops, chw):
    _, cfg = resolve_config(name, **options)
    cost = model_cost(cfg, repeats=0)
    assert cost["params"] == params
    assert within(cost["gmacs"], gmacs), cost["gmacs"]
    assert within(cost["gmacs_ptflops"], gmacs_ptflops), cost["gmacs_ptflops"]
    expected_shape = [1, 1000] if chw is None else [1, chw[1], chw[2], chw[0]]
    assert cost["output_shape"] == expected_shape
    assert cost["latency_ms"] is None


@pytest.mark.parametrize("bottlenecks", range(1, 17))
def test_resnet50_cumulative_parameters_after_each_bottleneck(bottlenecks):
    arch, cfg = resolve_config("resnet50", bottlenecks, layerwise=True, head=None)
    assert count_params(abstract_model(arch, cfg)) == (CUMULATIVE_RESNET50[bottlenecks - 1],) * 2


def test_original_layerttl_index_12_is_the_papers_ttl2():
    _, cfg = resolve_config("layerttl_resnet50", 12, head=None)
    assert model_cost(cfg, repeats=0)["params"] == 6_308_928


def test_tf_baseline_slimmed_resnet50_matches_the_paper():
    # TF-1: layer4 rebuilt at half width, 2 classes, pooled head (ANCHORS section 3; paper: 12.9 M, 3.56)
    _, cfg = resolve_config("resnet50", -1, head="pool", num_classes=2, slim_from=3, slim_factor=2)
    cost = model_cost(cfg, repeats=0)
    assert cost["params"] == 12_947_522
    assert round(cost["gmacs_ptflops"], 2) == 3.56


def test_resnet50_stem_counts_by_hand():
    # conv 7x7x3 -> 64 at 112x112; ptflops adds BN (x2) and ReLU at 112x112x64 and the max-pool's input
    arch, cfg = resolve_config("resnet50", 0, layerwise=True, head=None)
    macs, shape = count_macs(abstract_model(arch, cfg), 224)
    conv = 7 * 7 * 3 * 64 * 112 * 112
    assert (macs.conv, macs.dense, macs.bias) == (conv, 0, 0)
    assert macs.ptflops == conv + 4 * 64 * 112 * 112
    assert shape == (1, 56, 56, 64)


def test_pooled_head_adds_its_weights_and_bias():
    arch, cfg = resolve_config("resnet50", 1, head="pool", num_classes=7)
    macs, _ = count_macs(abstract_model(arch, cfg), 224)
    assert (macs.dense, macs.bias) == (256 * 7, 7)
    assert count_params(abstract_model(arch, cfg))[0] == 225_344 + 256 * 7 + 7


def test_flatten_head_counts_every_input_position():
    arch, cfg = resolve_config("resnet50", 3, head="flatten", num_classes=2)
    macs, _ = count_macs(abstract_model(arch, cfg), 224)
    assert macs.dense == 1024 * 14 * 14 * 2


def _jaxpr(fn, *shapes):
    return jax.make_jaxpr(fn)(*(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)).jaxpr


def test_counter_handles_grouped_convs_batched_dots_and_scans():
    def grouped(x, w):  # 8 -> 6 channels in 2 groups, 3x3, stride 1, no padding: 4x4 output
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", feature_group_count=2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    assert count_jaxpr_macs(_jaxpr(grouped, (1, 6, 6, 8), (3, 3, 4, 6))).conv == 4 * 4 * 6 * (3 * 3 * 4)
    batched = _jaxpr(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), (2, 3, 5), (2, 5, 4))
    assert count_jaxpr_macs(batched) == MacCount(dense=2 * 3 * 4 * 5)

    def repeated(x, w):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=3)[0]

    assert count_jaxpr_macs(_jaxpr(repeated, (1, 4), (4, 4))).dense == 3 * 4 * 4


def test_counter_looks_inside_jitted_functions():
    jaxpr = _jaxpr(jax.jit(lambda x, w: x @ w), (2, 3), (3, 5))
    assert count_jaxpr_macs(jaxpr).dense == 2 * 3 * 5


def _conv_jaxpr(conv, combine):
    """Jaxpr of combine(conv(x), x) with the conv's parameters first and the image last."""
    graphdef, state = nnx.split(conv)
    closed = jax.make_jaxpr(lambda s, x: combine(nnx.merge(graphdef, s)(x), x))(
        state, jax.ShapeDtypeStruct((1, 5, 5, 4), jnp.float32))
    flags = [False] * (len(closed.jaxpr.invars) - 1) + [True]
    return closed.jaxpr, flags


def test_a_conv_bias_is_a_bias_add_and_a_residual_add_is_not():
    biased = nnx.eval_shape(lambda: nnx.Conv(4, 4, (1, 1), use_bias=True, rngs=nnx.Rngs(0)))
    jaxpr, flags = _conv_jaxpr(biased, lambda y, x: y)
    assert count_jaxpr_macs(jaxpr, flags) == MacCount(conv=5 * 5 * 4 * 4, bias=5 * 5 * 4)
    plain = nnx.eval_shape(lambda: nnx.Conv(4, 4, (1, 1), use_bias=False, rngs=nnx.Rngs(0)))
    jaxpr, flags = _conv_jaxpr(plain, lambda y, x: y + x)
    assert count_jaxpr_macs(jaxpr, flags) == MacCount(conv=5 * 5 * 4 * 4)


def test_a_batch_1_dense_bias_is_counted():
    # at batch 1 the bias has as many elements as the output: only its origin tells it from a shortcut
    dense = nnx.eval_shape(lambda: nnx.Linear(6, 3, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(dense)
    x = jax.ShapeDtypeStruct((1, 6), jnp.float32)
    closed = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    assert count_jaxpr_macs(closed.jaxpr, [False, False, True]) == MacCount(dense=18, bias=3)


def test_elementwise_counts_are_recorded_only_inside_the_context():
    x = jnp.ones((1, 4, 4, 2))
    layers.relu(x)
    with layers.count_elementwise() as ops:
        layers.relu(x)
        layers.max_pool_3x3_s2(x)
    assert ops == [32, 32]


def test_frozen_prefixes_leave_trainable_parameters():
    arch, cfg = resolve_config("resnet50", 1, head=None)
    model = abstract_model(arch, cfg)
    assert count_params(model, frozen=("conv1", "bn1")) == (225_344, 225_344 - 9_536)
    assert count_params(model, frozen=lambda path: path.startswith("layer1.")) == (225_344, 9_536)


def test_a_given_model_is_counted_and_timed_without_changing_its_mode(tinynet):
    _, cfg = resolve_config("tinynet", -1, head="pool", num_classes=3, image_size=32)
    model = zero_weight_model(abstract_model(tinynet, cfg))  # concrete arrays, no random-init compile
    model.train()
    timed = model_cost(cfg, model=model, repeats=3, warmup=1)
    counted = model_cost(cfg, repeats=0)
    for key in ("params", "gmacs", "gmacs_ptflops", "output_shape"):
        assert timed[key] == counted[key]
    assert timed["output_shape"] == [1, 3]
    assert math.isfinite(timed["latency_ms"]) and timed["latency_ms"] > 0
    assert timed["latency_repeats"] == 3
    assert model.bn1.use_running_average is False  # timing ran an eval-mode copy


def test_analyze_cost_json_has_the_design_contract(tinynet):
    args = ["--model", "tinynet", "--trunc", "1", "--head", "none", "--image-size", "32", "--repeats", "2"]
    result = CliRunner().invoke(app, ["analyze", "cost", *args, "--json"])
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)
    # stem conv 3x3x3 -> 8 at 16x16, then one 3x3 8 -> 8 unit at 16x16
    assert cost["gmacs"] == pytest.approx((27 * 8 + 72 * 8) * 16 * 16 / 1e9)
    assert cost["params"] == 27 * 8 + 2 * 8 + 72 * 8 + 2 * 8
    assert cost["latency_ms"] > 0 and cost["gmacs_ptflops"] > cost["gmacs"]


def test_analyze_cost_table_names_both_conventions():
    args = ["--model", "resnet50", "--trunc", "11", "--layerwise", "--head", "none", "--repeats", "0"]
    result = CliRunner().invoke(app, ["analyze", "cost", *args])
    assert result.exit_code == 0, result.output
    assert "6,308,928" in result.stdout and "2.841" in result.stdout and "2.870" in result.stdout
