"""Truncated networks: output shapes at every point of ANCHORS section 2, names, and bad configs."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from ttlx.errors import ConfigError
from ttlx.models import resolve_config
from ttlx.registry import UnknownNameError


def abstract_model(name, **kw):
    arch, cfg = resolve_config(name, **kw)
    return nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))), cfg


def output_shape(name, size=224, **kw):
    model, _ = abstract_model(name, image_size=size, **kw)
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x).shape


@pytest.mark.parametrize("name,trunc,shape", [
    ("resnet50", 1, (1, 56, 56, 256)), ("resnet50", 2, (1, 28, 28, 512)),
    ("resnet50", 3, (1, 14, 14, 1024)), ("resnet50", -1, (1, 7, 7, 2048)),
    ("densenet201", 1, (1, 28, 28, 128)), ("densenet201", 2, (1, 14, 14, 256)),
    ("densenet201", 3, (1, 7, 7, 896)), ("densenet201", -1, (1, 7, 7, 1920)),
    ("densenet121", 3, (1, 7, 7, 512)), ("densenet121", -1, (1, 7, 7, 1024)),
])
@pytest.mark.slow
def test_blockwise_feature_maps_match_the_reference(name, trunc, shape):
    assert output_shape(name, trunc=trunc, head=None) == shape


@pytest.mark.parametrize("bottlenecks,shape", [
    (0, (1, 56, 56, 64)), (3, (1, 56, 56, 256)), (4, (1, 28, 28, 512)), (11, (1, 14, 14, 1024)),
    (16, (1, 7, 7, 2048)),
])
def test_layerwise_resnet_keeps_the_first_bottlenecks(bottlenecks, shape):
    assert output_shape("resnet50", trunc=bottlenecks, layerwise=True, head=None) == shape


def test_layerwise_densenet_cut_inside_a_block_keeps_no_transition():
    # 7 dense layers: block 1 (6 layers, 256 ch at 56 px), transition 1 (128 ch at 28 px), 1 more layer
    assert output_shape("densenet201", trunc=7, layerwise=True, head=None) == (1, 28, 28, 160)
    assert output_shape("densenet201", trunc=6, layerwise=True, head=None) == (1, 56, 56, 256)


def test_original_layerttl_index_keeps_one_bottleneck_less():
    _, cfg = abstract_model("layerttl_resnet50", trunc=12, head=None)
    assert (cfg.arch, cfg.trunc, cfg.layerwise) == ("resnet50", 11, True)
    _, full = abstract_model("layerttl_resnet50", trunc=-1, head=None)
    assert full.trunc == 16


@pytest.mark.parametrize("head,classes,shape", [("pool", 7, (1, 7)), ("flatten", 3, (1, 3))])
def test_heads_give_logits(head, classes, shape):
    assert output_shape("resnet50", size=64, trunc=2, head=head, num_classes=classes) == shape


def test_flatten_head_size_follows_the_feature_map():
    model, _ = abstract_model("resnet50", trunc=1, head="flatten", num_classes=2)
    assert model.fc.kernel.shape == (256 * 56 * 56, 2)  # 802,816 inputs, as ANCHORS section 2 says


def test_names_resolve_case_insensitively():
    _, cfg = abstract_model("ResNet50", trunc=3, head=None)
    assert cfg.arch == "resnet50"


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="resnet50", trunc=4), "resnet50 has no block-wise truncation point 4; choose one of -1, 1, 2, 3"),
    (dict(name="resnet50", trunc=17, layerwise=True), "choose a number of bottlenecks from 0 to 16"),
    (dict(name="densenet201", trunc=99, layerwise=True), "choose a number of dense layers from 0 to 98"),
    (dict(name="layerttl_resnet50", trunc=18), "takes -1 or 1..17"),
    (dict(name="resnet50", head="avg"), "Unknown head 'avg'"),
    (dict(name="resnet50", slim_from=5), "cannot be slimmed from stage 5"),
    (dict(name="r3d_18", slim_from=3, window=8, image_size=32),
     "r3d_18 has no slimmed version for the TF baseline; leave out --slim-from."),
])
def test_bad_configs_name_what_is_valid(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        resolve_config(name, **kwargs)


def test_unknown_architecture_lists_registered_ones():
    with pytest.raises(UnknownNameError, match="Unknown model 'vgg16'; choose one of: .*resnet50"):
        resolve_config("vgg16")


def test_slimming_a_stage_the_model_does_not_keep_is_refused():
    with pytest.raises(ConfigError, match="--slim-from 3 slims nothing: resnet50 truncated at 1 keeps stages 0..0"):
        resolve_config("resnet50", 1, slim_from=3)
    with pytest.raises(ConfigError, match="keeps stages 0..1"):
        resolve_config("resnet50", 5, layerwise=True, slim_from=2)
    _, cfg = resolve_config("resnet50", 8, layerwise=True, slim_from=2)  # 8 bottlenecks reach layer3
    assert cfg.slim_from == 2
