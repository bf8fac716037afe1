"""Chest-X-ray sources: whole pickled modules read without torch, and parity with torchxrayvision.

``scripts/make_golden.py xrv`` saved (torch 2.14.1, torchxrayvision 1.5.7) a torchxrayvision DenseNet with
small widths (growth 8, 16 initial features, blocks (1, 2, 1, 1), 1 input channel, 18 outputs) whole, in
torch's legacy format like the published files, with its outputs on grey inputs in [-1024, 1024]; and a
reference-style ``best.pt``: ``DataParallel(Sequential(DenseNet, head))`` in the zip format. Their weights
are ``golden_array``'s, so the expected values are rebuilt here from numpy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models import densenet
from ttlx.models.weights import convert
from ttlx.models.weights.pretrained import load_pretrained
from ttlx.models.weights.torchmodule import backbone_keys, read_module_file

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
TOLERANCE = 1e-4


def expected(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return golden.golden_state_dict([(k, v.shape) for k, v in state.items()])


def test_a_pickled_torchxrayvision_module_reads_as_its_state_dict():
    state, classes = read_module_file(GOLDEN / "xrv_small.pt")
    assert classes == ["torchxrayvision.models.DenseNet"]
    assert state["features.conv0.weight"].shape == (16, 1, 7, 7) and state["classifier.weight"].shape == (18, 19)
    assert len(state) == 91 and "op_threshs" not in state
    for key, value in expected(state).items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_the_reference_best_pt_gives_its_backbone_and_drops_its_head():
    state, classes = read_module_file(GOLDEN / "reference_best.pt")
    assert classes == ["torch.nn.parallel.data_parallel.DataParallel", "torch.nn.modules.container.Sequential",
                       "torchvision.models.densenet.DenseNet"]
    backbone, head = backbone_keys(state)
    assert head == ["1.2.weight", "1.2.bias"]
    assert all(k.startswith(("features.", "classifier.")) for k in backbone)
    inner = {k.removeprefix("module.0."): v for k, v in state.items() if k.startswith("module.0.")}
    assert set(inner) == set(backbone)
    for key, value in expected(inner).items():
        np.testing.assert_array_equal(backbone[key], value, err_msg=key)


def test_a_grey_stem_replicated_to_three_channels_gives_the_same_output_on_grey_images():
    rng = np.random.default_rng(0)
    grey_kernel = rng.standard_normal((7, 7, 1, 8)).astype(np.float32)
    flat, widened = convert.replicate_grey_stem({"conv0.kernel": grey_kernel}, {"conv0.kernel": (7, 7, 3, 8)})
    assert widened == ["conv0.kernel"] and flat["conv0.kernel"].shape == (7, 7, 3, 8)
    x = rng.uniform(-1024, 1024, (2, 16, 16, 1)).astype(np.float32)

    def conv(image, kernel):
        return jax.lax.conv_general_dilated(image, kernel, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    one, three = np.asarray(conv(x, grey_kernel)), np.asarray(conv(np.repeat(x, 3, -1), flat["conv0.kernel"]))
    assert np.abs(three - one).max() <= 1e-6 * np.abs(one).max()
    # a kernel that already fits, or a stem that is not 1-channel, is left alone
    assert convert.replicate_grey_stem({"k": flat["conv0.kernel"]}, {"k": (7, 7, 3, 8)})[1] == []


@pytest.fixture
def small_densenet(monkeypatch):
    """ttlx's DenseNet code with the widths of the recorded torchxrayvision model."""
    monkeypatch.setattr(densenet, "GROWTH", 8)
    monkeypatch.setattr(densenet, "INIT_FEATURES", 16)
    return densenet.DenseNetArchitecture(name="xrv_small_test", num_units=5, unit_name="dense layer",
                                         classifier_key="classifier", stage_units=(1, 2, 1, 1))


def loaded(arch, **kw):
    cfg = ModelConfig(arch=arch.name, image_size=32, **kw)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))
    model = nnx.merge(graphdef, jax.tree.map(lambda s: np.full(s.shape, np.nan, s.dtype), state))
    load_pretrained(model, arch, cfg, str(GOLDEN / "xrv_small.pt"))  # the file path a user takes
    model.eval()
    return model


def test_outputs_match_torchxrayvision_at_every_block(small_densenet):
    with np.load(GOLDEN / "xrv_small.npz") as data:
        x, outputs = data["input"], {k[4:]: data[k] for k in data.files if k.startswith("out:")}
    grey3 = np.repeat(x, 3, axis=-1)  # the replicated stem takes 3 equal channels
    model = loaded(small_densenet, trunc=-1, head="pool", num_classes=18)
    inner = jax.device_get(nnx.jit(lambda m, v: m.intermediates(v))(model, grey3))
    errors = {name: float(np.abs(inner[name] - outputs[name]).max() / np.abs(outputs[name]).max())
              for name in golden.XRV_POINTS}
    logits = np.asarray(nnx.jit(lambda m, v: m(v))(model, grey3))
    errors["logits"] = float(np.abs(logits - outputs["logits"]).max() / np.abs(outputs["logits"]).max())
    assert max(errors.values()) <= TOLERANCE, errors


def test_a_truncated_model_from_torchxrayvision_weights_ends_at_its_block(small_densenet):
    with np.load(GOLDEN / "xrv_small.npz") as data:
        x, expected_map = data["input"], data["out:transition2"]
    model = loaded(small_densenet, trunc=2, head=None)
    features = np.asarray(nnx.jit(lambda m, v: m(v))(model, np.repeat(x, 3, axis=-1)))
    assert features.shape == expected_map.shape
    assert np.abs(features - expected_map).max() <= TOLERANCE * np.abs(expected_map).max()


def test_the_source_record_names_the_substitute_its_convention_and_colour_images(tmp_path, monkeypatch):
    from ttlx.models import get_architecture
    from ttlx.models.weights.sources import source_record

    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path))
    densenet121 = get_architecture("densenet121")
    grey = source_record(densenet121, "chexpert", channels=1)
    assert (grey["resolved"], grey["input"]) == ("xrv-chex", "xrv")
    assert grey["note"].startswith("--pretrained chexpert: the paper's CheXpert weights were never released")
    colour = source_record(densenet121, "xrv-all", channels=3)
    assert colour["input"] == "xrv" and colour["note"].startswith(
        "xrv-all was trained on grey chest X-rays and this dataset is in colour: each channel is scaled")
    assert source_record(densenet121, "imagenet", channels=3) == {
        "name": "imagenet", "resolved": "imagenet", "input": "imagenet"}
    assert source_record(get_architecture("resnet50"), "random") == {
        "name": "random", "resolved": "random", "input": "imagenet"}


def test_a_grey_stem_loads_as_one_channel_and_matches_torchxrayvision_on_its_own_input(small_densenet):
    with np.load(GOLDEN / "xrv_small.npz") as data:
        x, expected_map = data["input"], data["out:norm5"]
    model = loaded(small_densenet, trunc=-1, head=None, in_channels=1)
    assert model.features.conv0.kernel.get_value().shape == (7, 7, 1, 16)
    features = np.asarray(nnx.jit(lambda m, v: m(v))(model, x))  # [N, H, W, 1], as torchxrayvision takes it
    assert np.abs(features - expected_map).max() <= TOLERANCE * np.abs(expected_map).max()


def test_a_three_channel_stem_narrows_to_one_channel_as_its_sum():
    kernel = np.random.default_rng(1).standard_normal((7, 7, 3, 4)).astype(np.float32)
    flat, fitted = convert.replicate_grey_stem({"conv1.kernel": kernel}, {"conv1.kernel": (7, 7, 1, 4)})
    assert fitted == ["conv1.kernel"]
    np.testing.assert_allclose(flat["conv1.kernel"][:, :, 0], kernel.sum(axis=2), rtol=1e-6)
    back, _ = convert.replicate_grey_stem(flat, {"conv1.kernel": (7, 7, 3, 4)})  # W/3 each: sums to the same
    np.testing.assert_allclose(back["conv1.kernel"].sum(axis=2), kernel.sum(axis=2), rtol=1e-5)


def test_resnet50_and_densenet121_build_a_one_channel_stem_on_request():
    from ttlx.errors import ConfigError
    from ttlx.models import resolve_config

    for name, key in (("resnet50", "conv1"), ("densenet121", "features.conv0")):
        arch, cfg = resolve_config(name, 1, head=None, in_channels=1)
        shapes = convert.variable_shapes(nnx.eval_shape(lambda arch=arch, cfg=cfg: arch.build(cfg, nnx.Rngs(0))))
        assert shapes[f"{key}.kernel"][2] == 1
    with pytest.raises(ConfigError, match="in_channels"):
        resolve_config("resnet50", in_channels=2)


def test_a_torchxrayvision_file_converts_only_under_a_name_and_keeps_its_convention(small_densenet, tmp_path,
                                                                                      monkeypatch):
    from ttlx.errors import WeightsError
    from ttlx.models.weights.pretrained import convert_file
    from ttlx.models.weights.sources import cached_metadata

    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=r"xrv_small\.pt is a torchxrayvision model, not ImageNet weights; "
                                           r"name it with --source \(a name\)\.$"):
        convert_file(small_densenet, GOLDEN / "xrv_small.pt")
    meta = cached_metadata(convert_file(small_densenet, GOLDEN / "xrv_small.pt", "mine"))
    assert (meta["input"], meta["stem"], meta["origin"]) == ("xrv", "1 channel replicated to 3 (W/3 each)",
                                                            "xrv_small.pt")


def test_a_torchxrayvision_file_given_as_pretrained_brings_its_convention(small_densenet):
    from ttlx.models.weights.sources import source_record

    assert source_record(small_densenet, str(GOLDEN / "xrv_small.pt"))["input"] == "xrv"
    assert source_record(small_densenet, str(GOLDEN / "reference_best.pt"))["input"] == "imagenet"


def test_xrv_images_scale_to_1024_and_back_for_grad_cam():
    from ttlx.analysis.gradcam import denormalize
    from ttlx.data.augment import normalize

    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    scaled = normalize(levels, "xrv")
    assert (scaled.min(), scaled.max()) == (-1024.0, 1024.0) and np.all(scaled[..., 0] == scaled[..., 2])
    np.testing.assert_allclose(denormalize(scaled, "xrv") * 255, levels, atol=1e-3)
