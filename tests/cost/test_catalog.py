"""``ttlx models``: truncation points, output shapes and parameter counts against ANCHORS.md and builds."""

import json

import pytest
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.cost import catalog
from ttlx.cost.model_cost import abstract_model, count_params
from ttlx.errors import ConfigError
from ttlx.models import resolve_config

# ANCHORS.md sections 2 and 3 (backbone only, 224 px)
BLOCK_ROWS = {
    ("resnet50", -1): ("layer4.2", "2048x7x7", 23_508_032),
    ("resnet50", 1): ("layer1.2", "256x56x56", 225_344),
    ("resnet50", 2): ("layer2.3", "512x28x28", 1_444_928),
    ("resnet50", 3): ("layer3.5", "1024x14x14", 8_543_296),
    ("densenet201", -1): ("norm5", "1920x7x7", 18_092_928),
    ("densenet201", 1): ("transition1", "128x28x28", 377_856),
    ("densenet201", 2): ("transition2", "256x14x14", 1_429_632),
    ("densenet201", 3): ("transition3", "896x7x7", 11_110_528),
    ("densenet121", -1): ("norm5", "1024x7x7", 6_953_856),  # + 1,025,000 classifier = torchvision's 7,978,856
    ("densenet121", 1): ("transition1", "128x28x28", 377_856),
    ("densenet121", 2): ("transition2", "256x14x14", 1_429_632),
    ("densenet121", 3): ("transition3", "512x7x7", 4_793_728),
    # 3D networks on windows of 24 slices (CxDxHxW); + a 1-output pooled head: 28,398,705 and
    # 325,105 / 1,803,121 / 10,503,921 (issue 24), r3d_18 + its 400-class head: 33,371,472
    ("penet", -1): ("encoders.3.penet_blocks.2", "2048x2x7x7", 28_396_656),
    ("penet", 1): ("encoders.0.penet_blocks.2", "256x12x56x56", 324_848),
    ("penet", 2): ("encoders.1.penet_blocks.3", "512x6x28x28", 1_802_608),
    ("penet", 3): ("encoders.2.penet_blocks.5", "1024x3x14x14", 10_502_896),
    ("r3d_18", -1): ("layer4.1", "512x3x14x14", 33_166_272),
    ("r3d_18", 1): ("layer1.1", "64x24x112x112", 471_232),
    ("r3d_18", 2): ("layer2.1", "128x12x56x56", 2_028_992),
    ("r3d_18", 3): ("layer3.1", "256x6x28x28", 8_257_472),
}
RESNET50_AFTER_BOTTLENECK = [
    9_536, 84_544, 154_944, 225_344, 604_736, 884_800, 1_164_864, 1_444_928, 2_957_376, 4_074_560,
    5_191_744, 6_308_928, 7_426_112, 8_543_296, 14_582_848, 19_045_440, 23_508_032,
]


@pytest.fixture(scope="module")
def layerwise_table():
    return catalog.model_table(layerwise=True)


def rows_of(table, arch, layerwise):
    return {r["trunc"]: r for r in table if r["architecture"] == arch and r["layerwise"] == layerwise}


def test_block_points_match_the_anchors(layerwise_table):
    block = {(r["architecture"], r["trunc"]): (r["last_unit"], r["output_chw"], r["params"])
             for r in layerwise_table if not r["layerwise"]}
    assert block == BLOCK_ROWS


def test_resnet50_layerwise_points_match_the_cumulative_anchors(layerwise_table):
    rows = rows_of(layerwise_table, "resnet50", True)
    assert [rows[n]["params"] for n in range(17)] == RESNET50_AFTER_BOTTLENECK
    assert [rows[n]["last_unit"] for n in (0, 1, 3, 4, 11, 16)] == [
        "stem", "layer1.0", "layer1.2", "layer2.0", "layer3.3", "layer4.2"]
    assert rows[11]["output_chw"] == "1024x14x14"


@pytest.mark.parametrize("dense_layers", [0, 1, 6, 7, 18, 19, 66, 67, 97, 98])
def test_densenet201_layerwise_rows_equal_their_own_builds(layerwise_table, dense_layers):
    # the table reads layer-wise points off one trace; a build of the point itself is the reference
    row = rows_of(layerwise_table, "densenet201", True)[dense_layers]
    arch, cfg = resolve_config("densenet201", dense_layers, layerwise=True, head=None)
    model = abstract_model(arch, cfg)
    assert row["params"] == count_params(model)[0]
    assert row["last_unit"] == [name for name, _ in model.units()][-1]


def test_densenet201_layerwise_cut_after_a_block_keeps_no_transition(layerwise_table):
    rows = rows_of(layerwise_table, "densenet201", True)
    assert (rows[6]["output_chw"], rows[7]["output_chw"]) == ("256x56x56", "160x28x28")
    assert len(rows) == 99 and rows[98]["params"] == 18_092_928


def test_densenet121_layerwise_rows_end_at_its_58_dense_layers(layerwise_table):
    rows = rows_of(layerwise_table, "densenet121", True)
    assert len(rows) == 59 and rows[58]["params"] == 6_953_856 and rows[58]["last_unit"] == "norm5"
    assert rows[42]["last_unit"] == "denseblock3.denselayer24" and rows[42]["output_chw"] == "1024x14x14"


def test_only_architectures_are_listed_not_legacy_names(layerwise_table):
    assert {r["architecture"] for r in layerwise_table} == {"resnet50", "densenet201", "densenet121", "penet",
                                                            "r3d_18"}


@pytest.mark.parametrize(("arch", "units"), [("penet", 16), ("r3d_18", 8)])
def test_3d_layerwise_rows_meet_the_block_rows(layerwise_table, arch, units):
    rows, blocks = rows_of(layerwise_table, arch, True), rows_of(layerwise_table, arch, False)
    assert len(rows) == units + 1 and rows[units]["params"] == blocks[-1]["params"]
    ends = {"penet": (3, 7, 13), "r3d_18": (2, 4, 6)}[arch]
    assert [rows[n]["params"] for n in ends] == [blocks[t]["params"] for t in (1, 2, 3)]
    assert [rows[n]["output_chw"] for n in ends] == [blocks[t]["output_chw"] for t in (1, 2, 3)]


def test_3d_rows_follow_the_window():
    rows = catalog.architecture_rows(resolve_config("penet")[0], image_size=192, window=32)
    assert rows[0]["output_chw"] == "2048x2x6x6" and rows[1]["output_chw"] == "256x16x48x48"


def test_rows_without_a_layer_class_fall_back_to_building_every_point(tinynet, monkeypatch):
    read_off = catalog.architecture_rows(tinynet, image_size=32, layerwise=True)
    monkeypatch.setattr(catalog, "layer_units", lambda model, num_units: None)
    assert catalog.architecture_rows(tinynet, image_size=32, layerwise=True) == read_off
    assert [r["output_chw"] for r in read_off if r["layerwise"]] == [
        "8x16x16", "8x16x16", "16x8x8", "16x8x8", "16x4x4"]


def test_output_shapes_follow_the_image_size(tinynet):
    rows = catalog.architecture_rows(tinynet, image_size=64)
    assert [(r["trunc"], r["output_chw"]) for r in rows] == [(-1, "16x8x8"), (1, "8x32x32"), (2, "16x16x16")]


def test_too_small_images_are_refused():
    with pytest.raises(ConfigError, match="--image-size 16 is too small; use at least 32 pixels."):
        catalog.model_table(image_size=16)


def test_models_command_prints_json_rows_and_a_table(layerwise_table, monkeypatch):
    block_rows = [r for r in layerwise_table if not r["layerwise"]]
    asked = []
    monkeypatch.setattr(catalog, "model_table", lambda **kw: asked.append(kw) or block_rows)
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == block_rows
    assert {"architecture": "resnet50", "trunc": 2, "layerwise": False, "last_unit": "layer2.3",
            "output_chw": "512x28x28", "params": 1_444_928} in block_rows
    table = CliRunner().invoke(app, ["models", "--image-size", "128", "--layerwise", "--window", "16"])
    assert "8,543,296" in table.stdout and "1024x14x14" in table.stdout
    assert asked == [{"image_size": 224, "layerwise": False, "window": None},
                     {"image_size": 128, "layerwise": True, "window": 16}]
