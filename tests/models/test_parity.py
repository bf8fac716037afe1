"""Parity with torchvision, the acceptance test of the weight conversion (no torch needed).

``scripts/make_golden.py`` (``nox -s golden``) filled torchvision's resnet50, densenet201 and densenet121 with weights
from numpy and recorded their outputs; here the same weights are rebuilt from numpy, converted and
loaded into ttlx's networks (whole and truncated), and every recorded point must agree to
max |flax - torch| / max |torch| <= 1e-4 in float32 on CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from parity_checks import TOLERANCE, relative_error
from safetensors.numpy import save_file

from ttlx.models import resolve_config
from ttlx.models.weights.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

TRUNCATED = [  # (arch, trunc, layerwise, recorded point the truncated network must end at)
    ("resnet50", 0, True, "stem"),
    ("resnet50", 2, False, "layer2.3"),
    ("resnet50", 11, True, "layer3.3"),
    ("densenet201", 3, True, "denseblock1.denselayer3"),
    ("densenet201", 1, False, "transition1"),
    ("densenet201", 7, True, "denseblock2.denselayer1"),
    ("densenet121", 2, True, "denseblock1.denselayer2"),
    ("densenet121", 2, False, "transition2"),
    ("densenet121", 51, True, "denseblock4.denselayer9"),
]


def nan_model_loaded_from(source, name: str, **kw):
    """Load into a model whose every value starts as NaN, so any value the load missed shows in the output.

    This also skips the random initialisation ``create_model`` compiles, which on 2 cores costs more than
    the comparison itself (``create_model``'s path to ``load_pretrained`` is tested in test_pretrained.py).
    """
    arch, cfg = resolve_config(name, **kw)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))
    model = nnx.merge(graphdef, jax.tree.map(lambda s: np.full(s.shape, np.nan, s.dtype), state))
    load_pretrained(model, arch, cfg, source)
    return model


@pytest.fixture(scope="module")
def recorded():
    """arch -> (torchvision-format state dict rebuilt from numpy, recorded outputs)."""
    out = {}
    for arch in ("resnet50", "densenet201", "densenet121"):
        manifest, outputs = golden.load_golden(arch)
        out[arch] = (golden.golden_state_dict(manifest), outputs)
    return out


@pytest.fixture(scope="module")
def image():
    return golden.golden_input().transpose(0, 2, 3, 1)  # NCHW -> NHWC


def test_golden_files_cover_every_block_point():
    for arch, points in golden.POINTS.items():
        _, outputs = golden.load_golden(arch)
        assert set(outputs) == {*points, "logits"}
        assert outputs["logits"].shape == (golden.INPUT_SHAPE[0], 1000)
        assert sum("block-wise" in what for what in points.values()) == 4


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet50", "densenet201", "densenet121"])
def test_whole_network_matches_torchvision_at_every_point(arch, recorded, image, tmp_path):
    state_dict, outputs = recorded[arch]
    path = tmp_path / f"{arch}.safetensors"
    save_file(state_dict, str(path))  # through the file path a user takes
    model = nan_model_loaded_from(str(path), arch, trunc=-1, num_classes=1000, head="pool")
    model.eval()
    names = sorted(golden.POINTS[arch])

    @nnx.jit
    def forward(model, x):
        inner = model.intermediates(x)
        return {name: inner[name] for name in names}, model.apply_head(inner[list(inner)[-1]])

    points, logits = jax.device_get(forward(model, image))
    errors = {name: relative_error(points[name], outputs[name]) for name in names}
    errors["logits"] = relative_error(logits, outputs["logits"])
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize(("arch", "trunc", "layerwise", "point"), TRUNCATED)
def test_truncated_network_ends_at_the_recorded_point(arch, trunc, layerwise, point, recorded, image):
    state_dict, outputs = recorded[arch]
    model = nan_model_loaded_from(state_dict, arch, trunc=trunc, layerwise=layerwise, head=None)
    model.eval()
    features = jax.device_get(nnx.jit(lambda m, x: m(x))(model, image))
    assert features.shape == outputs[point].shape
    assert relative_error(features, outputs[point]) <= TOLERANCE
