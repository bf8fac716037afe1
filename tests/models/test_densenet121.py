"""DenseNet121: torchvision's blocks (6, 12, 24, 16), its parameter count, names, points, weights and slimming.

Outputs against torchvision are in test_parity.py (golden file densenet121.npz).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from ttlx.cost.model_cost import abstract_model, count_params
from ttlx.errors import ConfigError
from ttlx.models import get_architecture, resolve_config
from ttlx.models.weights import convert
from ttlx.models.weights.pretrained import weights_rows


def params(**kw) -> int:
    arch, cfg = resolve_config("densenet121", **kw)
    return count_params(abstract_model(arch, cfg))[0]


def test_parameters_equal_torchvisions_densenet121():
    assert params(trunc=-1, head="pool", num_classes=1000) == 7_978_856  # torchvision.models.densenet121()
    assert params(trunc=58, layerwise=True, head=None) == params(trunc=-1, head=None) == 6_953_856


def test_registered_with_its_aliases_points_and_imagenet_source():
    arch = get_architecture("DenseNet121")
    assert (arch.name, arch.num_units, arch.stage_units) == ("densenet121", 58, (6, 12, 24, 16))
    hub = arch.weights["imagenet"]
    assert hub.repo_id == "timm/densenet121.tv_in1k"
    assert hub.torchvision_url.endswith("/densenet121-a639ec97.pth")
    assert [r["source"] for r in weights_rows(arch)][:1] == ["imagenet"]


def test_layerwise_points_run_to_58():
    with pytest.raises(ConfigError, match="choose a number of dense layers from 0 to 58"):
        resolve_config("densenet121", 59, layerwise=True)


def test_state_dict_keys_are_torchvisions():
    # torchvision's densenet121 names (golden manifest) map one to one onto the Flax model's variables
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("make_golden", root / "scripts" / "make_golden.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    manifest, _ = golden.load_golden("densenet121")
    torch_keys = {k for k, _ in manifest if not k.endswith("num_batches_tracked")}
    arch, cfg = resolve_config("densenet121", -1, head="pool", num_classes=1000)
    shapes = convert.variable_shapes(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))
    assert set(convert.to_torchvision({k: np.zeros(s) for k, s in shapes.items()})) == torch_keys


def test_tf_slim_narrows_the_later_blocks_only():
    whole = params(trunc=-1, head=None)
    slim = params(trunc=-1, head=None, slim_from=2, slim_factor=2)
    assert slim < whole
    assert params(trunc=2, head=None, slim_from=1, slim_factor=32) < params(trunc=2, head=None)
    with pytest.raises(ConfigError, match="leaves densenet121's slimmed layers without channels"):
        resolve_config("densenet121", -1, slim_from=1, slim_factor=64)
