"""``ttlx plugins`` over fake plugins registered in fixtures: who provides what, and broken plugins."""

import json
import warnings
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ttlx import registry
from ttlx.cli import app
from ttlx.registry import plugin_rows


def fake_entry_point(name, package, obj=None, error=None):
    def load():
        if error is not None:
            raise error
        return obj

    return SimpleNamespace(name=name, dist=SimpleNamespace(name=package), load=load)


def build(cfg, rngs):
    raise NotImplementedError


FAKE_GROUPS = {
    "ttlx.models": [
        fake_entry_point("fancynet", "ttlx-fancy", SimpleNamespace(aliases=("FancyNet", "fancy-net"), build=build)),
        fake_entry_point("brokennet", "ttlx-broken", error=ImportError("No module named 'torchish'")),
        fake_entry_point("plainnet", "ttlx-fancy", SimpleNamespace(build=build)),
    ],
    "ttlx.datasets": [
        fake_entry_point("skinset", "ttlx-skin", SimpleNamespace(aliases=("SKIN",), scan=lambda manual_dir: None)),
        fake_entry_point("halfset", "ttlx-half", SimpleNamespace(aliases=("HALF",))),  # registers no scan()
    ],
}


@pytest.fixture
def fake_plugins(monkeypatch):
    """Fresh registries (checked like the real ones) whose entry points are the fakes above."""
    monkeypatch.setattr(registry, "_entry_points", lambda group: FAKE_GROUPS[group])
    monkeypatch.setattr(registry, "models", registry.Registry("ttlx.models", "model", needs=("build",)))
    monkeypatch.setattr(registry, "datasets", registry.Registry("ttlx.datasets", "dataset", needs=("scan",)))


def test_rows_name_the_providing_package_and_the_failure(fake_plugins):
    with pytest.warns(UserWarning) as caught:
        rows = plugin_rows()
    assert rows == [
        {"kind": "dataset", "name": "skinset", "aliases": "SKIN", "package": "ttlx-skin", "status": "ok"},
        {"kind": "model", "name": "fancynet", "aliases": "FancyNet, fancy-net", "package": "ttlx-fancy",
         "status": "ok"},
        {"kind": "model", "name": "plainnet", "aliases": "", "package": "ttlx-fancy", "status": "ok"},
        {"kind": "dataset", "name": "halfset", "aliases": "", "package": "ttlx-half",
         "status": "failed to load: TypeError: SimpleNamespace object is no dataset: it has no scan() method"},
        {"kind": "model", "name": "brokennet", "aliases": "", "package": "ttlx-broken",
         "status": "failed to load: ImportError: No module named 'torchish'"},
    ]
    assert len(caught) == 2  # one warning per broken plugin
    messages = sorted(str(w.message) for w in caught)
    assert "'ttlx-broken'" in messages[0] and "brokennet" in messages[0]
    assert messages[1] == ("ttlx: the plugin package 'ttlx-half' failed to load its dataset 'halfset' (TypeError: "
                           "SimpleNamespace object is no dataset: it has no scan() method); the other plugins still "
                           "work.")


def test_a_broken_plugin_does_not_hide_the_others(fake_plugins):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert registry.models.get("FANCY-NET") is FAKE_GROUPS["ttlx.models"][0].load()


def test_plugins_command_prints_json_and_a_table(fake_plugins):
    with pytest.warns(UserWarning, match="failed to load") as caught:
        result = CliRunner().invoke(app, ["plugins", "--json"])
        table = CliRunner().invoke(app, ["plugins"])
    assert len(caught) == 2  # loaded once per process, each broken plugin warned once
    assert result.exit_code == 0, result.output
    assert [(r["name"], r["package"]) for r in json.loads(result.stdout)] == [
        ("skinset", "ttlx-skin"), ("fancynet", "ttlx-fancy"), ("plainnet", "ttlx-fancy"), ("halfset", "ttlx-half"),
        ("brokennet", "ttlx-broken")]
    assert table.exit_code == 0
    for text in ("fancynet", "ttlx-fancy", "skinset", "ttlx-broken", "failed to load"):
        assert text in table.stdout


def test_builtin_models_are_provided_by_ttlx():
    rows = {r["name"]: r for r in plugin_rows() if r["kind"] == "model"}
    assert rows["resnet50"]["package"] == rows["densenet201"]["package"] == "ttlx"
    assert rows["resnet50"]["aliases"] == "ResNet50, resnet-50"


def test_a_broken_dataset_plugin_leaves_every_other_command_working(fake_plugins):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert registry.datasets.resolve("skin") == "skinset"
        with pytest.raises(registry.UnknownNameError, match=r"Unknown dataset 'HALF'; choose one of: skinset\."):
            registry.datasets.get("HALF")
