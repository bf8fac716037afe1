"""PENet checkpoint files (``.pth.tar``): read without running code, renamed, loaded and converted; and
r3d_18's Kinetics-400 weights named like the ImageNet ones.

``tests/golden/xnet_kin_tiny.pth.tar`` was written by ``scripts/make_golden_3d.py checkpoints`` with the
published PENet code: a PENet cut after its first bottleneck with a 3-class head, saved as the Kinetics
checkpoint is (torch's legacy format, ``module.`` keys with ``xnet_blocks``, optimizer, lr_scheduler with a
pickled ``functools.partial``, model_args).
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.errors import WeightsError
from ttlx.models import get_architecture, resolve_config
from ttlx.models.weights import convert, penet_checkpoint
from ttlx.models.weights.download import offline_message
from ttlx.models.weights.pretrained import converted_path, load_pretrained
from ttlx.models.weights.torchfile import LEGACY_MAGIC

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "golden" / "xnet_kin_tiny.pth.tar"
_spec = importlib.util.spec_from_file_location("make_golden_3d", ROOT / "scripts" / "make_golden_3d.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def expected_tiny() -> dict[str, np.ndarray]:
    """The tiny checkpoint's weights from numpy, under ttlx's key names."""
    state, model_args = penet_checkpoint.read_checkpoint(TINY)

    def original(key: str) -> str:  # the PENetClassifier key golden_array was seeded with
        if key.startswith("fc."):
            return "classifier." + key
        return key.replace("se_block.fc1.", "se_block.excite.0.").replace("se_block.fc2.", "se_block.excite.2.")

    seed = golden.TINY_CHECKPOINT["seed"]
    expected = {k: golden.golden.golden_array(original(k), v.shape, seed) for k, v in state.items()}
    return expected, state, model_args


def test_the_kinetics_layout_is_read_and_renamed_without_torch():
    expected, state, model_args = expected_tiny()
    assert model_args == {"model_depth": 50, "cardinality": 32, "num_classes": 3, "num_channels": 3}
    assert "encoders.0.penet_blocks.0.se_block.fc1.weight" in state and "fc.bias" in state
    assert not any(k.startswith("module.") or "xnet" in k or "excite" in k for k in state)
    assert len(state) == 21
    for key, value in state.items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_code_named_by_the_other_entries_never_runs(tmp_path):
    class RunsACommand:
        def __init__(self, marker):
            self.marker = marker

        def __reduce__(self):
            return os.system, (f"touch {self.marker}",)

    marker, path = tmp_path / "ran", tmp_path / "evil.pth.tar"
    buffer = io.BytesIO()
    for part in (LEGACY_MAGIC, 1001, {"little_endian": True},
                 {"model_state": {}, "optimizer": RunsACommand(marker), "model_args": {"x": RunsACommand(marker)}},
                 []):
        pickle.dump(part, buffer, protocol=2)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(WeightsError, match="holds no PENet weights"):
        penet_checkpoint.read_checkpoint(path)
    assert not marker.exists()


def test_other_files_are_refused_with_one_sentence(tmp_path):
    path = tmp_path / "notes.pth.tar"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="is not a file torch.save wrote"):
        penet_checkpoint.read_checkpoint(path)
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(TINY.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="is truncated or corrupt"):
        penet_checkpoint.read_checkpoint(cut)


def nan_model(**kw):
    arch, cfg = resolve_config("penet", image_size=32, window=4, **kw)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))

    def nan(leaf):
        return np.full(leaf.shape, 0 if jax.dtypes.issubdtype(leaf.dtype, np.integer) else np.nan, leaf.dtype)

    return arch, cfg, nnx.merge(graphdef, jax.tree.map(nan, state))


def test_pretrained_file_loads_the_kept_part_and_drops_a_head_of_other_classes():
    expected, _, _ = expected_tiny()
    arch, cfg, model = nan_model(trunc=1, layerwise=True, head="pool", num_classes=2)
    plan = load_pretrained(model, arch, cfg, str(TINY))
    assert plan.dropped == {"classifier": ["fc.kernel", "fc.bias"]}
    flat = convert.model_flat(model)
    np.testing.assert_array_equal(flat["in_conv.0.kernel"],
                                  expected["in_conv.0.weight"].transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(flat["encoders.0.penet_blocks.0.se_block.fc2.kernel"],
                                  expected["encoders.0.penet_blocks.0.se_block.fc2.weight"].T)


def test_a_checkpoint_of_a_shallower_network_does_not_fit_a_deeper_cut():
    arch, cfg, model = nan_model(trunc=1, head=None)
    with pytest.raises(WeightsError, match="in the model, not in the weights: encoders.0.penet_blocks.1"):
        load_pretrained(model, arch, cfg, str(TINY))


def test_weights_convert_names_the_kinetics_file_and_checks_the_whole_network(tmp_path, monkeypatch):
    runner = CliRunner()
    refused = runner.invoke(app, ["weights", "convert", "penet", str(TINY)])
    assert refused.exit_code != 0 and "does not fit penet uncut" in refused.output
    manifest, _ = golden.load_golden("penet")  # a whole PENetClassifier's keys and shapes
    whole = penet_checkpoint.ttlx_keys({"module." + k: v for k, v in golden.golden.golden_state_dict(manifest).items()})
    monkeypatch.setattr(penet_checkpoint, "read_checkpoint", lambda path: (whole, {}))
    copied = tmp_path / "xnet_kin_90.pth.tar"
    copied.write_bytes(b"\x80")  # the reader is replaced: the whole network's weights stand in for the file
    done = runner.invoke(app, ["weights", "convert", "penet", str(copied)])
    assert done.exit_code == 0, done.output
    assert converted_path("penet", "kinetics600").is_file()
    assert get_architecture("penet").source_name_of("penet_best.pth.tar") == "pe"


def test_r3d_18_kinetics_weights_come_from_torchvision_with_a_hash_prefix():
    arch = get_architecture("r3d_18")
    hub = arch.weights["kinetics400"]
    assert hub.torchvision_url == "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"
    message = offline_message("r3d_18", "kinetics400", hub)
    assert "download https://download.pytorch.org/models/r3d_18-b3b3357e.pth on a machine" in message
    assert "ttlx weights convert r3d_18 FILE --source kinetics400" in message
