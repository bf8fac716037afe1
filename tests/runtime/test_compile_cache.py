"""The persistent compilation cache shared by several processes (ttlx.runtime.compile_cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttlx.runtime import compile_cache

HERE = Path(__file__).parent


@pytest.fixture
def cache_class():
    from jax._src import compilation_cache

    original = compilation_cache.LRUCache
    assert compile_cache.install()
    yield compilation_cache.LRUCache
    compilation_cache.LRUCache = original


def test_an_entry_left_without_its_access_time_no_longer_breaks_every_write(cache_class, tmp_path):
    cache = cache_class(str(tmp_path), max_size=250)
    (tmp_path / f"orphan{compile_cache.CACHE_SUFFIX}").write_bytes(b"x" * 100)  # a writer killed between files
    os.utime(tmp_path / f"orphan{compile_cache.CACHE_SUFFIX}", ns=(1, 1))  # the oldest entry
    cache.put("a", b"a" * 100)
    assert cache.get("a") == b"a" * 100
    cache.put("b", b"b" * 100)  # over 250 bytes: the orphan, the least recently used, is evicted
    assert not (tmp_path / f"orphan{compile_cache.CACHE_SUFFIX}").exists()
    assert cache.get("a") == b"a" * 100 and cache.get("b") == b"b" * 100
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".lock")) == [
        "a-atime", "a-cache", "b-atime", "b-cache"]  # whole entries, each with its access time, no temporaries


def test_a_write_that_fails_half_way_leaves_no_torn_entry(cache_class, tmp_path, monkeypatch):
    cache = cache_class(str(tmp_path), max_size=-1)

    def disk_full(src, dst):  # the temporary file was written; the rename never happens
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compile_cache.os, "replace", disk_full)
    with pytest.raises(OSError):
        cache.put("k", b"0123456789")
    monkeypatch.undo()
    assert cache.get("k") is None and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_processes_compiling_the_same_programs_at_once_share_the_cache_without_warnings(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the folder given on the command line, with eviction on
    command = [sys.executable, str(HERE / "compile_same_programs.py"), str(tmp_path / "cache"), "12"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-2000:]
        assert "persistent compilation cache" not in out, out[-2000:]  # no "Error writing/reading ... entry"
    folder = next((tmp_path / "cache").iterdir())  # cpus-N
    entries = {p.name.removesuffix("-cache") for p in folder.glob("*-cache")}
    assert entries and entries == {p.name.removesuffix("-atime") for p in folder.glob("*-atime")}
    assert not list(folder.glob(".*.tmp"))
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0 and "persistent compilation cache" not in again.stderr
    hits = int(again.stdout.strip().rsplit("hits=", 1)[1])
    assert hits >= 12  # every program written by the others is read back
