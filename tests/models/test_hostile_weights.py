"""Hostile weights files through `ttlx weights convert ARCH FILE`: each is refused with exit code 2 and one
sentence, nothing reaches the cache ($TTLX_CACHE_DIR) and the given file is left as it was.

Dtypes: float16, bfloat16 and float64 tensors are converted to float32 (values beyond float32's range are
refused as damaged); integer, boolean, complex and 8-bit float tensors are refused, since no torchvision
weight has them and a cast would turn a wrong file into plausible numbers. Code-running pickles and their
refusal by the reader are tested in test_convert_torchfile.py; here the same pickle goes through the CLI.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_convert_torchfile import RunsACommand
from test_pretrained import tiny_state
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.errors import WeightsError
from ttlx.models import create_model
from ttlx.models.weights.pretrained import convert_file

FLOATS = "give a state dict of float16, bfloat16, float32 or float64 tensors."


@pytest.fixture
def cache(tmp_path, monkeypatch, tinynet):
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def state(tinynet):
    """Valid torchvision-format weights of the tiny network."""
    return tiny_state()


def convert(file: Path, *extra: str):
    return CliRunner().invoke(app, ["weights", "convert", "tinynet", str(file), *extra])


def cached(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


def refused(file: Path, cache: Path, message: str | re.Pattern, *extra: str) -> None:
    before = file.read_bytes()
    result = convert(file, *extra)
    assert result.exit_code == 2 and result.stdout == "", result.output
    if isinstance(message, re.Pattern):
        assert message.fullmatch(result.stderr), result.stderr
    else:
        assert result.stderr == f"Error: {message}\n"
    assert cached(cache) == []
    assert file.read_bytes() == before


def with_value(state, key: str, value) -> dict:
    return {**state, key: value}


def raw_safetensors(path: Path, header, body: bytes = b"") -> Path:
    """A safetensors file written byte by byte: 8-byte little-endian header length, header, data."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)
    return path


# ---------------------------------------------------------------------------------------------------
# dtypes and values
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool", "complex64"])
def test_a_weight_that_is_not_floating_point_is_refused(dtype, state, tmp_path, cache):
    path = tmp_path / f"{dtype}.safetensors"
    save_file(with_value(state, "conv1.weight", state["conv1.weight"].astype(dtype)), str(path))
    refused(path, cache, f"{path} holds conv1.weight as {dtype}, not as floating-point weights; {FLOATS}")


def test_an_8_bit_float_weight_is_refused_from_the_header(tmp_path, cache):
    # numpy cannot even represent it: the header's dtype is checked before any tensor is read
    path = raw_safetensors(tmp_path / "f8.safetensors",
                           {"conv1.weight": {"dtype": "F8_E4M3", "shape": [8, 3, 3, 3], "data_offsets": [0, 216]}},
                           bytes(216))
    refused(path, cache, f"{path} holds conv1.weight as f8_e4m3, not as floating-point weights; {FLOATS}")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad, state, tmp_path, cache):
    weight = state["layer2.0.bn.running_var"].copy()
    weight[0] = bad
    path = tmp_path / "nan.safetensors"
    save_file(with_value(state, "layer2.0.bn.running_var", weight), str(path))
    refused(path, cache, f"{path} holds NaN, infinite or out-of-range values in layer2.0.bn.running_var; the "
                         f"file is damaged, so give an intact copy.")


def test_float64_beyond_the_float32_range_is_refused(state, tmp_path, cache):
    weight = state["fc.weight"].astype(np.float64)
    weight[0, 0] = 1e300
    path = tmp_path / "huge.safetensors"
    save_file(with_value(state, "fc.weight", weight), str(path))
    refused(path, cache, f"{path} holds NaN, infinite or out-of-range values in fc.weight; the file is damaged, "
                         f"so give an intact copy.")


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_float16_bfloat16_and_float64_weights_are_converted_to_float32(dtype, state, tmp_path, cache):
    path = tmp_path / "other_float.safetensors"
    save_file({k: v.astype(dtype) for k, v in state.items()}, str(path))
    result = convert(path, "--source", "mine")
    assert result.exit_code == 0, result.output
    stored = load_file(str(cache / "weights" / "tinynet" / "mine.safetensors"))
    assert {v.dtype for v in stored.values()} == {np.dtype(np.float32)}
    expected = state["conv1.weight"].astype(dtype).astype(np.float32).transpose(2, 3, 1, 0)
    assert np.array_equal(stored["conv1.kernel"], expected)


def test_an_in_memory_state_dict_is_checked_the_same_way(state, tinynet):
    bad = with_value(state, "conv1.weight", state["conv1.weight"].astype(np.int32))
    with pytest.raises(WeightsError, match=r"^The given state dict holds conv1\.weight as int32, not as "
                                           r"floating-point weights"):
        create_model("tinynet", pretrained=bad)


def test_a_bad_file_as_pretrained_fails_before_the_network_is_built(state, tmp_path, monkeypatch, tinynet):
    path = tmp_path / "int.safetensors"
    save_file(with_value(state, "conv1.weight", state["conv1.weight"].astype(np.int64)), str(path))
    monkeypatch.setattr("ttlx.models.build_model", lambda *a, **k: pytest.fail("built before the check"))
    with pytest.raises(WeightsError, match=r"holds conv1\.weight as int64"):
        create_model("tinynet", pretrained=str(path))


# ---------------------------------------------------------------------------------------------------
# shapes and architectures
# ---------------------------------------------------------------------------------------------------
def test_a_wrong_shape_is_refused(state, tmp_path, cache):
    path = tmp_path / "shape.safetensors"
    save_file(with_value(state, "conv1.weight", state["conv1.weight"][:, :2].copy()), str(path))
    refused(path, cache, f"{path} does not fit tinynet uncut: shapes differ: conv1.kernel model (3, 3, 3, 8) vs "
                         f"weights (3, 3, 2, 8).")


def test_a_file_of_another_architecture_is_refused(tmp_path, cache):
    path = tmp_path / "densenet.safetensors"
    save_file({"features.conv0.weight": np.ones((64, 3, 7, 7), np.float32)}, str(path))
    refused(path, cache, f"{path} holds no weights for tinynet uncut: none of its 1 keys fits (the model expects "
                         f"e.g. bn1.bias, bn1.mean, bn1.scale, bn1.var (+21 more)); give weights of that "
                         f"architecture.")


# ---------------------------------------------------------------------------------------------------
# broken files
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["empty.safetensors", "empty.pth"])
def test_an_empty_file_is_refused(name, tmp_path, cache):
    path = tmp_path / name
    path.write_bytes(b"")
    refused(path, cache, f"{path} is empty (0 bytes); download it again or give another weights file.")


def corrupt(path: Path, detail: str) -> re.Pattern:
    return re.compile(rf"Error: {re.escape(str(path))} is truncated or corrupt \([^\n]*{detail}[^\n]*\); "
                      rf"download it again\.\n")


def test_a_truncated_safetensors_file_is_refused(state, tmp_path, cache):
    whole = tmp_path / "whole.safetensors"
    save_file(state, str(whole))
    path = tmp_path / "cut.safetensors"
    path.write_bytes(whole.read_bytes()[:-100])  # the header promises 100 bytes more than are there
    refused(path, cache, corrupt(path, "not fully covered"))


def test_a_header_longer_than_the_file_is_refused(tmp_path, cache):
    path = tmp_path / "long.safetensors"
    path.write_bytes(struct.pack("<Q", 5000) + b'{"a": 1}')
    refused(path, cache, corrupt(path, "header"))


@pytest.mark.parametrize("header,detail", [
    (b"this is not json", "invalid JSON"),
    (b"[1, 2, 3]", "invalid JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (json.dumps({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}).encode(), "overflow"),
])
def test_a_header_that_is_not_a_safetensors_json_header_is_refused(header, detail, tmp_path, cache):
    path = raw_safetensors(tmp_path / "header.safetensors", header, bytes(8))
    refused(path, cache, corrupt(path, detail))


def test_a_pth_that_would_run_code_is_refused_through_the_cli(tmp_path, cache):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"conv1.weight": RunsACommand(marker)}, protocol=2))
    refused(path, cache, f"{path} holds a pickled posix.system, not only tensors; ttlx never unpickles arbitrary "
                         f"objects, so save the state dict alone (torch.save(model.state_dict(), ...)) or as "
                         f".safetensors.")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# where the converted file goes
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["../../escaped", "/tmp/escaped", "a b", "$(touch x)", ".hidden", "-rf"])
def test_a_source_name_that_is_no_plain_name_is_refused(source, state, tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path))
    refused(path, cache, f"--source takes a plain name (letters, digits, '.', '_' and '-', no path), got "
                         f"{source!r}.", "--source", source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]


def test_a_failed_write_leaves_nothing_that_looks_converted(state, tmp_path, cache, monkeypatch, tinynet):
    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.numpy.save_file", disk_full)
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path))
    with pytest.raises(OSError, match="No space left on device"):
        convert_file(tinynet, path, "mine")
    assert [p for p in cache.rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------------------------------------------
# whole pickled modules (torchxrayvision files, the reference's best.pt): only allow-listed classes
# ---------------------------------------------------------------------------------------------------
def module_pickle(cls_module: str, cls_name: str, state: bytes = b"}") -> bytes:
    """Protocol-2 pickle of ``cls_module.cls_name`` made by NEWOBJ (no call), then BUILD with ``state``."""
    return (b"\x80\x02c" + cls_module.encode() + b"\n" + cls_name.encode() + b"\n)\x81" + state + b"b.")


def reduce_pickle(module: str, name: str, argument: str) -> bytes:
    """Protocol-2 pickle calling ``module.name(argument)`` (REDUCE)."""
    return pickle.dumps(argument, protocol=2)[2:-1].join([b"\x80\x02c" + f"{module}\n{name}\n".encode(), b"\x85R."])


def hostile_module(case: str, marker: Path) -> bytes:
    command = f"touch {marker}"
    return {
        "os.system": lambda: reduce_pickle("os", "system", command),
        "builtins.eval": lambda: reduce_pickle("builtins", "eval", f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": lambda: reduce_pickle("subprocess", "Popen", command),
        "an unknown class": lambda: module_pickle("evilpkg.models", "Backbone"),
        "an allow-listed class called": lambda: reduce_pickle("torch.nn.modules.conv", "Conv2d", command),
        "a module holding os.system": lambda: module_pickle(
            "torch.nn.modules.container", "Sequential",
            b"}X\x08\x00\x00\x00_modules" + reduce_pickle("os", "system", command)[2:-1] + b"s"),
    }[case]()


HOSTILE_MODULES = ["os.system", "builtins.eval", "subprocess.Popen", "an unknown class",
                   "an allow-listed class called", "a module holding os.system"]


@pytest.mark.parametrize("case", HOSTILE_MODULES)
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pickled_module_that_would_run_code_is_refused(case, layout, tmp_path, cache):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    payload = hostile_module(case, marker)
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
    else:
        header = b"".join(pickle.dumps(part, protocol=2) for part in (0x1950A86A20F9469CFC6C, 1001, {}))
        path.write_bytes(header + payload)
    refused(path, cache, re.compile(rf"Error: {re.escape(str(path))} holds a pickled .+, not only tensors; ttlx never "
                                    r"unpickles arbitrary objects, so save the state dict alone .+\n"))
    assert not marker.exists()


def test_a_legacy_module_class_outside_the_allow_list_is_refused(tmp_path, cache):
    # the legacy format names a module's class in a persistent id ('module', class, file, source)
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    header = b"".join(pickle.dumps(part, protocol=2) for part in (0x1950A86A20F9469CFC6C, 1001, {}))
    persistent = b"(X\x06\x00\x00\x00modulecos\nsystem\nX\x01\x00\x00\x00fX\x01\x00\x00\x00st"
    path.write_bytes(header + b"\x80\x02" + persistent + b"Q)\x81}b.")
    refused(path, cache, re.compile(r"Error: .+ holds a pickled os\.system, not only tensors; .+\n"))
    assert not marker.exists()
