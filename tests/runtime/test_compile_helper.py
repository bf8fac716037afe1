"""The helper process that compiles a run's programs before the run (``ttlx.runtime.precompile``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ttlx.models.densenet import DENSENET201
from ttlx.models.resnet import RESNET50
from ttlx.runtime import precompile


def test_only_densenet_scale_programs_use_the_helper_unless_told(monkeypatch, tmp_path):
    config = {"model": "densenet201", "data_dir": str(tmp_path)}  # unique to this test: its own marker
    monkeypatch.delenv("TTLX_COMPILE_HELPER", raising=False)
    assert DENSENET201.cpu_compile_in_helper and not RESNET50.cpu_compile_in_helper
    assert precompile.wanted(config, DENSENET201)
    assert not precompile.wanted(config, RESNET50)
    monkeypatch.setenv("TTLX_COMPILE_HELPER", "1")
    assert precompile.wanted(config, RESNET50)
    monkeypatch.setenv("TTLX_COMPILE_HELPER", "off")
    assert not precompile.wanted(config, DENSENET201)
    monkeypatch.delenv("TTLX_COMPILE_HELPER")
    marker = precompile.marker_path(config)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("{}")
    assert not precompile.wanted(config, DENSENET201)  # compiled once already: the cache has it
    assert precompile.marker_path({**config, "workdir": "elsewhere"}) == marker  # the run dir is no part
    assert precompile.marker_path({**config, "batch_size": 8}) != marker
    monkeypatch.setattr(precompile, "PROGRAMS_REVISION", precompile.PROGRAMS_REVISION + 1)
    assert precompile.wanted(config, DENSENET201)  # ttlx compiles other programs now: once more


def test_a_failing_helper_leaves_no_marker(tmp_path, monkeypatch):
    """Run from a folder holding a ``ttlx.py`` and an ``attr.py`` (grain imports attrs, which imports attr):
    the helper still imports the real modules, and its own error is what comes back."""
    for shadow in ("ttlx.py", "attr.py"):
        (tmp_path / shadow).write_text("raise SystemExit('imported from the working directory')\n")
    monkeypatch.chdir(tmp_path)
    config = {"dataset": "no-such-dataset", "data_dir": str(tmp_path)}
    failure = precompile.compile_in_helper(config, "ttlx.training.loop:compile_programs_of")
    assert failure and "no-such-dataset" in failure  # the helper's last line, for the run's note
    assert not precompile.marker_path(config).exists()


@pytest.mark.slow
def test_helper_fills_the_cache_and_the_run_only_loads_its_step(tmp_path, digits_dir):
    """`ttlx train` with the helper forced on: the helper compiles the train step into the cache and the run
    loads it. Had the run compiled a program of its own (a different cache key), the cache would hold two
    train steps."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update({"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "TTLX_COMPILE_HELPER": "1"})
    command = [sys.executable, "-m", "ttlx.cli", "train", "--dataset", "digits", "--data-dir", str(digits_dir),
               "--model", "resnet50", "--trunc", "1", "--pretrained", "random", "--image-size", "32",
               "--pooling", "--max-epoch", "1", "--sub", "50", "--workdir", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "helper process" in done.stderr
    train_steps = [p.name for p in cache.glob("jit_train_step-*-cache")]
    assert len(train_steps) == 1, train_steps
    (marker,) = (cache / "ttlx-compiled").iterdir()
    assert json.loads(marker.read_text())["model"] == "resnet50"
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1
    again = subprocess.run([*command[:-1], str(tmp_path / "run2")], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "helper process" not in again.stderr  # the marker says the cache has it
    assert len(list(cache.glob("jit_train_step-*-cache"))) == 1

