"""Fetching the chest-X-ray sources: a pinned hub revision, a pinned SHA-256 enforced once set, a release
URL without a hash never downloaded unchecked, and one sentence offline (the URLs and the convert command)."""

from __future__ import annotations

import hashlib
import pickle
import urllib.request
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_pretrained import tiny_state

from ttlx.errors import WeightsError
from ttlx.models.architecture import HubWeights
from ttlx.models.weights.pretrained import convert_file, converted_path, fetch
from ttlx.models.weights.sources import CHEST_XRAY_SOURCES

RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"


def _op(value) -> bytes:
    return pickle.dumps(value, protocol=2)[2:-1]  # the opcodes of one plain value


def torch_zip(path: Path, state: dict) -> Path:
    """A state dict as torch.save's zip format writes it (OrderedDict of _rebuild_tensor_v2), without torch."""
    body, records = [b"\x80\x02ccollections\nOrderedDict\n)R"], {}
    for index, (key, value) in enumerate(state.items()):
        value = np.ascontiguousarray(value, np.float32)
        storage = b"(" + _op("storage") + b"ctorch\nFloatStorage\n" + _op(str(index)) + _op("cpu") + _op(value.size)
        body += [_op(key), b"ctorch._utils\n_rebuild_tensor_v2\n(", storage + b"tQ", _op(0), _op(value.shape),
                 _op(tuple(s // 4 for s in value.strides)), b"\x89ccollections\nOrderedDict\n)RtRs"]
        records[f"archive/data/{index}"] = value.tobytes()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"".join(body) + b".")
        archive.writestr("archive/byteorder", "little")
        for name, data in records.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def xrv_like(tinynet, sha256=None):
    hub = HubWeights("someone/tiny-chex", "model.pt", torchvision_url=RELEASE, revision="0" * 40, sha256=sha256,
                     input="xrv")
    return replace(tinynet, name="tinychex", weights={"xrv-chex": hub})


def fake_hub(monkeypatch, file: Path, calls: list, reachable: bool = True):
    import huggingface_hub as hf

    def paths_info(self, repo_id, paths, **kw):
        calls.append(("info", repo_id, kw))
        if not reachable:
            raise ConnectionError("Name or service not known")
        return [SimpleNamespace(lfs=SimpleNamespace(sha256=hashlib.sha256(file.read_bytes()).hexdigest()))]

    def download(repo_id, filename, cache_dir, **kw):
        calls.append(("download", repo_id, kw))
        target = Path(cache_dir) / "blob" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
        return str(target)

    monkeypatch.setattr(hf, "try_to_load_from_cache", lambda *a, **k: calls.append(("cache", a, k)))
    monkeypatch.setattr(hf.HfApi, "get_paths_info", paths_info)
    monkeypatch.setattr(hf, "hf_hub_download", download)


def no_release_download(monkeypatch, calls):
    def refuse(url, timeout=None):
        calls.append(("url", url))
        raise OSError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_the_registered_sources_pin_revisions_and_conventions():
    chex, everything = CHEST_XRAY_SOURCES["densenet121"]["xrv-chex"], CHEST_XRAY_SOURCES["densenet121"]["xrv-all"]
    resnet = CHEST_XRAY_SOURCES["resnet50"]["xrv-res512"]
    assert all(len(h.revision) == 40 and h.input == "xrv" and h.filename == "model.pt"
               for h in (chex, everything, resnet))
    assert everything.sha256 == "56524913dd16a906422e8d8b66a7a5c46be1d82eb7ac012d8103776f1aa68899"
    assert "CheXpert" not in resnet.trained_on.split("(")[0] and chex.trained_on.startswith("CheXpert only")


def test_fetch_asks_the_pinned_revision_and_converts_with_the_convention(tinynet, tmp_path, cache, monkeypatch):
    state = tiny_state("tinynet")
    state["conv1.weight"] = state["conv1.weight"][:, :1]  # a grey stem
    file = torch_zip(tmp_path / "model.pt", state)
    calls = []
    fake_hub(monkeypatch, file, calls)
    arch = xrv_like(tinynet)
    path = fetch(arch, "xrv-chex")
    assert path == converted_path("tinychex", "xrv-chex")
    assert all(kw == {"revision": "0" * 40} for kind, _, kw in calls if kind in ("info", "download"))
    from ttlx.models.weights.sources import cached_metadata

    meta = cached_metadata(path)
    assert (meta["input"], meta["stem"], meta["source"]) == ("xrv", "1 channel replicated to 3 (W/3 each)",
                                                            "xrv-chex")


def test_a_hub_file_other_than_the_pinned_one_is_refused(tinynet, tmp_path, cache, monkeypatch):
    file = torch_zip(tmp_path / "model.pt", tiny_state("tinynet"))
    fake_hub(monkeypatch, file, [])
    with pytest.raises(WeightsError, match=r"^The hub now publishes another file for someone/tiny-chex/model\.pt "
                                           r"\(SHA-256 [0-9a-f]{16}\.\.\., ttlx pins 1111111111111111\.\.\.\), so "
                                           r"ttlx will not use it"):
        fetch(xrv_like(tinynet, sha256="1" * 64), "xrv-chex")
    assert not converted_path("tinychex", "xrv-chex").exists()


def test_offline_names_both_urls_and_the_convert_command_and_never_downloads_unchecked(
        tinynet, tmp_path, cache, monkeypatch):
    calls = []
    fake_hub(monkeypatch, tmp_path / "absent", calls, reachable=False)
    no_release_download(monkeypatch, calls)
    with pytest.raises(WeightsError) as err:
        fetch(xrv_like(tinynet), "xrv-chex")
    assert str(err.value) == (
        "The xrv-chex weights of tinychex are not cached and cannot be downloaded (offline?); download "
        f"https://huggingface.co/someone/tiny-chex/resolve/{'0' * 40}/model.pt (or {RELEASE}) on a machine with "
        "internet, run `ttlx weights convert tinychex FILE --source xrv-chex` here, or start from "
        "`--pretrained random`.")
    assert not [c for c in calls if c[0] == "url"]  # no SHA-256 known for the release file: not fetched


def test_the_release_file_name_converts_under_its_source_name(tinynet, tmp_path, cache):
    file = torch_zip(tmp_path / RELEASE.rsplit("/", 1)[-1], tiny_state("tinynet"))
    path = convert_file(xrv_like(tinynet), file)
    assert path == converted_path("tinychex", "xrv-chex")


def test_densenet121_with_pretrained_chexpert_offline_says_what_to_download_and_run(cache, monkeypatch):
    import huggingface_hub as hf

    from ttlx.models import resolve_config
    from ttlx.models.weights.pretrained import read_weights

    monkeypatch.setattr(hf, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", True)
    no_release_download(monkeypatch, calls := [])
    arch, cfg = resolve_config("densenet121", 2, head=None)
    with pytest.raises(WeightsError) as err:
        read_weights(arch, cfg, "chexpert")
    assert str(err.value) == (
        "--pretrained chexpert stands for xrv-chex here, the paper's CheXpert weights never having been released: "
        "The xrv-chex weights of densenet121 are not cached and cannot be downloaded (offline?); download "
        "https://huggingface.co/torchxrayvision/densenet121-res224-chex/resolve/"
        f"66ba023a17ca0315462d8db05c3954d4f4aaf92a/model.pt (or {RELEASE}) on a machine with internet, run "
        "`ttlx weights convert densenet121 FILE --source xrv-chex` here, or start from `--pretrained random`.")
    assert calls == []
