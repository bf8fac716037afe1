"""``ttlx plugins`` over fake plugins registered in fixtures: who provides what, and broken plugins."""

import json
import warnings
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ttlx import registry
from ttlx.cli import app
from ttlx.plugins_table import plugin_rows


def fake_entry_point(name, package, obj=None, error=None):
    def load():
        if error is not None:
            raise error
        return obj

    return SimpleNamespace(name=name, dist=SimpleNamespace(name=package), load=load)


FAKE_GROUPS = {
    "ttlx.models": [
        fake_entry_point("fancynet", "ttlx-fancy", SimpleNamespace(aliases=("FancyNet", "fancy-net"))),
        fake_entry_point("brokennet", "ttlx-broken", error=ImportError("No module named 'torchish'")),
        fake_entry_point("plainnet", "ttlx-fancy", object()),
    ],
    "ttlx.datasets": [fake_entry_point("skinset", "ttlx-skin", SimpleNamespace(aliases=("SKIN",)))],
}


@pytest.fixture
def fake_plugins(monkeypatch):
    """Fresh registries whose entry points are the fakes above, whatever is installed."""
    monkeypatch.setattr(registry, "_entry_points", lambda group: FAKE_GROUPS[group])
    monkeypatch.setattr(registry, "models", registry.Registry("ttlx.models", "model"))
    monkeypatch.setattr(registry, "datasets", registry.Registry("ttlx.datasets", "dataset"))


def test_rows_name_the_providing_package_and_the_failure(fake_plugins):
    with pytest.warns(UserWarning) as caught:
        rows = plugin_rows()
    assert rows == [
        {"kind": "dataset", "name": "skinset", "aliases": "SKIN", "package": "ttlx-skin", "status": "ok"},
        {"kind": "model", "name": "fancynet", "aliases": "FancyNet, fancy-net", "package": "ttlx-fancy",
         "status": "ok"},
        {"kind": "model", "name": "plainnet", "aliases": "", "package": "ttlx-fancy", "status": "ok"},
        {"kind": "model", "name": "brokennet", "aliases": "", "package": "ttlx-broken",
         "status": "failed to load: ImportError: No module named 'torchish'"},
    ]
    assert len(caught) == 1
    assert "'ttlx-broken'" in str(caught[0].message) and "brokennet" in str(caught[0].message)


def test_a_broken_plugin_does_not_hide_the_others(fake_plugins):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert registry.models.get("FANCY-NET") is FAKE_GROUPS["ttlx.models"][0].load()


def test_plugins_command_prints_json_and_a_table(fake_plugins):
    with pytest.warns(UserWarning, match="'ttlx-broken' failed to load") as caught:
        result = CliRunner().invoke(app, ["plugins", "--json"])
        table = CliRunner().invoke(app, ["plugins"])
    assert len(caught) == 1  # loaded once per process, warned once
    assert result.exit_code == 0, result.output
    assert [(r["name"], r["package"]) for r in json.loads(result.stdout)] == [
        ("skinset", "ttlx-skin"), ("fancynet", "ttlx-fancy"), ("plainnet", "ttlx-fancy"), ("brokennet", "ttlx-broken")]
    assert table.exit_code == 0
    for text in ("fancynet", "ttlx-fancy", "skinset", "ttlx-broken", "failed to load"):
        assert text in table.stdout


def test_builtin_models_are_provided_by_ttlx():
    rows = {r["name"]: r for r in plugin_rows() if r["kind"] == "model"}
    assert rows["resnet50"]["package"] == rows["densenet201"]["package"] == "ttlx"
    assert rows["resnet50"]["aliases"] == "ResNet50, resnet-50"
