"""Weight sources: names, files, run dirs, the converted cache, verified downloads and the offline message."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from typer.testing import CliRunner

from ttlx import registry
from ttlx.cli import app
from ttlx.config import ModelConfig
from ttlx.errors import WeightsError
from ttlx.models import create_model, resolve_config
from ttlx.models.architecture import HubWeights
from ttlx.models.weights import convert
from ttlx.models.weights.pretrained import (
    convert_file,
    converted_path,
    fetch,
    load_pretrained,
    resolve_source,
    weights_rows,
)

HUB = HubWeights("someone/tinyhub", torchvision_url="https://example.invalid/models/tinyhub-00000000.pth")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tinyhub(tinynet):
    """The tiny network with an ImageNet-like entry in its weights table."""
    arch = replace(tinynet, name="tinyhub", aliases=(), weights={"imagenet": HUB})
    registry.models.register("tinyhub", arch, package="tests")
    yield arch
    registry.models.unregister("tinyhub")


def tiny_state(name="tinynet", seed=1, **kw) -> dict[str, np.ndarray]:
    """Random torchvision-format weights of a tiny network (1000 classes unless told)."""
    arch, cfg = resolve_config(name, **{"num_classes": 1000, **kw})
    model = nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    return convert.to_torchvision({k: rng.standard_normal(s).astype(np.float32)
                                   for k, s in convert.variable_shapes(model).items()})


def build(name="tinynet", **kw):
    """A model with zero weights, made from the abstract one: no random-init compiles; loads overwrite it."""
    arch, cfg = resolve_config(name, **kw)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: arch.build(cfg, nnx.Rngs(0))))
    return arch, cfg, nnx.merge(graphdef, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state))


def written(path: Path, state) -> Path:
    save_file(state, str(path))
    return path


def fake_hub(monkeypatch, file: Path, sha: str | None = None, reachable: bool = True) -> None:
    """Stand in for huggingface_hub: nothing cached, metadata with ``sha``, a download copying ``file``."""
    import huggingface_hub as hf

    def paths_info(self, repo_id, paths):
        if not reachable:
            raise ConnectionError("Name or service not known")
        return [SimpleNamespace(lfs=SimpleNamespace(sha256=sha or hashlib.sha256(file.read_bytes()).hexdigest()))]

    def download(repo_id, filename, cache_dir):
        target = Path(cache_dir) / "blob" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
        return str(target)

    monkeypatch.setattr(hf, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(hf.HfApi, "get_paths_info", paths_info)
    monkeypatch.setattr(hf, "hf_hub_download", download)


def no_torchvision(monkeypatch) -> None:
    def refuse(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_a_bad_source_names_the_valid_ones(tmp_path):
    resnet = registry.models.get("resnet50")
    with pytest.raises(WeightsError) as err:
        resolve_source(resnet, "imagenet-v3")
    assert str(err.value) == ("Unknown pretrained source 'imagenet-v3' for resnet50; choose imagenet, "
                              "imagenet-v2, xrv-res512, random, a .safetensors/.pth file or a ttlx run dir.")
    with pytest.raises(WeightsError, match=r"^The weights file .*/nope\.pth does not exist; check the path\.$"):
        resolve_source(resnet, str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match=r"is a folder but not a ttlx run dir \(it has no config\.json\)"):
        resolve_source(resnet, str(tmp_path))
    assert resolve_source(resnet, "random").kind == "random"


@pytest.mark.slow
def test_a_converted_file_loads_by_name_with_its_classifier(tinynet, tmp_path):
    state = tiny_state()
    path = convert_file(tinynet, written(tmp_path / "tiny.safetensors", state), "mine")
    assert path == converted_path("tinynet", "mine")
    assert resolve_source(tinynet, "mine").kind == "named"
    model = create_model("tinynet", num_classes=1000, image_size=32, pretrained="mine")
    loaded = convert.model_flat(model)
    assert np.array_equal(loaded["fc.kernel"], state["fc.weight"].T)
    assert np.array_equal(loaded["layer3.0.conv.kernel"], state["layer3.0.conv.weight"].transpose(2, 3, 1, 0))


def test_a_file_of_another_network_is_refused_and_nothing_cached(tinynet, tmp_path):
    state = {"features.conv0.weight": np.ones((64, 3, 7, 7), np.float32)}
    with pytest.raises(WeightsError, match=r"holds no weights for tinynet uncut: none of its 1 keys fits"):
        convert_file(tinynet, written(tmp_path / "other.safetensors", state), "other")
    assert not converted_path("tinynet", "other").exists()


def test_a_converted_file_of_another_architecture_is_refused_by_its_label(tinynet, tmp_path, monkeypatch):
    path = convert_file(tinynet, written(tmp_path / "tiny.safetensors", tiny_state()), "mine")
    resnet = registry.models.get("resnet50")
    _, cfg = resolve_config("resnet50")
    with pytest.raises(WeightsError) as err:
        load_pretrained(None, resnet, cfg, str(path))
    assert str(err.value) == (f"{path} holds tinynet weights, which cannot initialise resnet50; pick a "
                              f"resnet50 weights file or another pretrained source.")


def test_a_deeper_source_loads_into_a_truncated_model_without_its_classifier(tinynet, tmp_path):
    state = tiny_state()
    arch, cfg, model = build(trunc=2, num_classes=1000)  # same classifier shape: 16 channels at both points
    plan = load_pretrained(model, arch, cfg, str(written(tmp_path / "t.safetensors", state)))
    assert sorted(plan.dropped) == ["classifier", "truncated"]
    assert {k.split(".")[0] for k in plan.dropped["truncated"]} == {"layer3"}


def test_fetch_verifies_the_hub_sha256_and_converts(tinyhub, tmp_path, monkeypatch):
    fake_hub(monkeypatch, written(tmp_path / "model.safetensors", tiny_state("tinyhub")))
    assert fetch(tinyhub, "imagenet") == converted_path("tinyhub", "imagenet")
    assert weights_rows(tinyhub) == [{"model": "tinyhub", "source": "imagenet", "hub": "someone/tinyhub",
                                      "origin": "torchvision", "trained_on": "ImageNet-1k",
                                      "licence": "BSD-3-Clause", "input": "imagenet", "top1": None,
                                      "cached": True}]
    arch, cfg, model = build("tinyhub", head=None)
    plan = load_pretrained(model, arch, cfg, "imagenet")
    assert plan.dropped == {"classifier": ["fc.bias", "fc.kernel"]} and not plan.fresh


def test_a_download_with_the_wrong_sha256_is_deleted(tinyhub, tmp_path, monkeypatch, cache):
    fake_hub(monkeypatch, written(tmp_path / "model.safetensors", tiny_state("tinyhub")), sha="0" * 64)
    with pytest.raises(WeightsError, match=r"^The download of someone/tinyhub/model\.safetensors failed its "
                                           r"SHA-256 check \(got [0-9a-f]{16}\.\.\., expected 0{16}\.\.\.\) and "
                                           r"was deleted; run the command again to download it anew\.$"):
        fetch(tinyhub, "imagenet")
    assert not (cache / "hub" / "blob" / "model.safetensors").exists()
    assert not converted_path("tinyhub", "imagenet").exists()


def test_a_hub_cache_blob_is_checked_against_its_sha256_name(tinyhub, tmp_path, monkeypatch):
    import huggingface_hub as hf

    blob = tmp_path / "blobs" / ("ab" * 32)  # the hub cache names a blob by its SHA-256
    blob.parent.mkdir()
    written(blob, tiny_state("tinyhub"))
    link = tmp_path / "snapshots" / "model.safetensors"
    link.parent.mkdir()
    link.symlink_to(blob)
    monkeypatch.setattr(hf, "try_to_load_from_cache", lambda *a, **k: str(link))
    with pytest.raises(WeightsError, match=r"^The cached someone/tinyhub/model\.safetensors failed its SHA-256 "
                                           r"check \(.*, expected abababababababab\.\.\.\) and was deleted"):
        fetch(tinyhub, "imagenet")
    assert not blob.exists() and not link.exists()


def test_offline_with_nothing_cached_says_what_to_download_and_run(tinyhub, tmp_path, monkeypatch):
    fake_hub(monkeypatch, tmp_path / "unused", reachable=False)
    no_torchvision(monkeypatch)
    expected = (
        "The imagenet weights of tinyhub are not cached and cannot be downloaded (offline?); download "
        "https://huggingface.co/someone/tinyhub/resolve/main/model.safetensors (or "
        "https://example.invalid/models/tinyhub-00000000.pth) on a machine with internet, run `ttlx weights "
        "convert tinyhub FILE --source imagenet` here, or start from `--pretrained random`.")
    arch, cfg, model = build("tinyhub")
    with pytest.raises(WeightsError) as err:
        load_pretrained(model, arch, cfg, "imagenet")
    assert str(err.value) == expected
    result = CliRunner().invoke(app, ["weights", "fetch", "tinyhub"])
    assert (result.exit_code, result.output) == (2, f"Error: {expected}\n")


def test_the_torchvision_fallback_checks_the_hash_in_the_file_name(tinynet, tmp_path, monkeypatch, cache):
    data = written(tmp_path / "t.safetensors", tiny_state()).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(data))
    for prefix, ok in ((digest[:8], True), ("deadbeef", False)):
        url = f"https://example.invalid/models/tinynet-{prefix}.safetensors"
        arch = replace(tinynet, weights={f"v{prefix}": HubWeights("someone/tiny", torchvision_url=url)})
        fake_hub(monkeypatch, tmp_path / "unused", reachable=False)
        if ok:
            assert fetch(arch, f"v{prefix}").exists()
        else:
            with pytest.raises(WeightsError, match=r"tinynet-deadbeef\.safetensors failed its SHA-256 check"):
                fetch(arch, f"v{prefix}")
            assert not (cache / "downloads" / f"tinynet-{prefix}.safetensors").exists()


def test_a_users_own_torchvision_file_that_fails_its_hash_is_kept(tinyhub, tmp_path):
    path = written(tmp_path / "tinyhub-00000000.pth.safetensors", tiny_state("tinyhub"))
    named = path.rename(tmp_path / "tinyhub-00000000.pth")  # the torchvision name, but not its content
    with pytest.raises(WeightsError, match=r"failed its SHA-256 check .*: it is damaged or not the original"):
        convert_file(tinyhub, named)
    assert named.exists()


def run_dir(tmp_path: Path, monkeypatch, cfg: ModelConfig, flat: dict) -> Path:
    import ttlx.runs.checkpoint

    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    monkeypatch.setattr(ttlx.runs.checkpoint, "load_run_weights", lambda path: (cfg, flat))
    return folder


def test_a_run_dir_of_another_architecture_or_a_shallower_cut_is_refused(tinynet, tmp_path, monkeypatch):
    arch, cfg, model = build(num_classes=2)
    folder = run_dir(tmp_path, monkeypatch, replace(cfg, arch="resnet50"), {})
    with pytest.raises(WeightsError, match=r"holds resnet50 weights, which cannot initialise tinynet; pick a "
                                           r"tinynet run or another pretrained source\.$"):
        load_pretrained(model, arch, cfg, str(folder))
    _, short_cfg, short = build(trunc=1, num_classes=2)
    run_dir(tmp_path, monkeypatch, short_cfg, convert.model_flat(short))
    with pytest.raises(WeightsError, match=r"^the run dir .*/run \(tinynet cut at block-wise point 1\) does "
                                           r"not fit tinynet uncut: in the model, not in the weights: "
                                           r"layer2\.0\.bn\.bias"):
        load_pretrained(model, arch, cfg, str(folder))


def test_a_run_dir_slimmed_like_the_model_loads_its_slim_stages(tmp_path, monkeypatch):
    cut = {"trunc": 5, "layerwise": True, "num_classes": 2, "slim_from": 1}  # layer2 at half width
    _, run_cfg, trained = build("resnet50", **cut)
    flat = {k: v + 1.0 for k, v in convert.model_flat(trained).items()}
    folder = run_dir(tmp_path, monkeypatch, run_cfg, flat)
    arch, cfg, model = build("resnet50", **cut)
    plan = load_pretrained(model, arch, cfg, str(folder))
    assert plan.dropped == {} and plan.fresh == []
    assert np.array_equal(convert.model_flat(model)["layer2.1.conv2.kernel"], flat["layer2.1.conv2.kernel"])


def test_cli_convert_and_list(tinynet, tmp_path):
    file = written(tmp_path / "tiny.safetensors", tiny_state())
    runner = CliRunner()
    result = runner.invoke(app, ["weights", "convert", "tinynet", str(file), "--source", "mine"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Converted {file} into ") and "--pretrained mine" in result.output
    rows = json.loads(runner.invoke(app, ["weights", "list", "--json"]).output)
    assert {"model": "tinynet", "source": "mine", "hub": "(converted locally)", "origin": "tiny.safetensors",
            "trained_on": "?", "licence": "(yours)", "input": "imagenet", "top1": None, "cached": True} in rows
    missing = runner.invoke(app, ["weights", "convert", "tinynet", str(tmp_path / "none.pth")])
    assert (missing.exit_code, missing.output) == (
        2, f"Error: The weights file {tmp_path / 'none.pth'} does not exist; check the path.\n")
    bare = runner.invoke(app, ["weights", "fetch", "tinynet"])
    assert (bare.exit_code, bare.output) == (2, "Error: tinynet has no downloadable weights; use --pretrained "
                                                "random, a weights file or a ttlx run dir.\n")
