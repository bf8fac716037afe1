"""Where batch-1 latency is timed (``ttlx.cost.latency``): a fresh process for helper-compiled networks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from ttlx.cost import latency
from ttlx.models import resolve_config


def test_a_helper_compiled_network_is_timed_in_a_fresh_process_that_loads_the_helpers_program(tmp_path):
    """With the helper forced on (as DenseNet201 has it on CPU): the helper compiles the forward, a fresh
    process times it, and the caller compiles nothing. Had the timing process compiled a program of its own
    (another cache key), the cache would hold two forwards."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update({"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "TTLX_COMPILE_HELPER": "1"})
    code = ("import json; from ttlx.models import resolve_config; from ttlx.cost import latency; "
            "_, cfg = resolve_config('resnet50', 1, head='pool', num_classes=2, image_size=32); "
            "ms = latency.latency_ms(cfg, repeats=3, warmup=1); "
            "print(json.dumps({'ms': ms, 'fresh': latency.times_in_fresh_process(cfg)}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "failed" not in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["fresh"] is True and math.isfinite(result["ms"]) and result["ms"] > 0
    assert len(list(cache.glob("jit_forward-*-cache"))) == 1
    (marker,) = (cache / "ttlx-compiled").iterdir()
    assert json.loads(marker.read_text())["latency"]["arch"] == "resnet50"


def test_a_network_the_fresh_process_cannot_build_is_timed_here_with_one_note(tinynet, monkeypatch, capsys):
    """The test architecture is registered in this process only, so the fresh process fails on it."""
    monkeypatch.setenv("TTLX_COMPILE_HELPER", "1")
    _, cfg = resolve_config("tinynet", -1, head="pool", num_classes=3, image_size=32)
    assert latency.times_in_fresh_process(cfg)
    ms = latency.latency_ms(cfg, repeats=2, warmup=1)
    assert math.isfinite(ms) and ms > 0
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "timing it in this process" in note and "tinynet" in note


def test_other_networks_are_timed_in_this_process(monkeypatch):
    monkeypatch.delenv("TTLX_COMPILE_HELPER", raising=False)
    _, resnet = resolve_config("resnet50", 1, image_size=32)
    _, densenet = resolve_config("densenet201", 1, image_size=32)
    assert not latency.times_in_fresh_process(resnet)
    assert latency.times_in_fresh_process(densenet)  # on CPU with a persistent cache (the tests share one)
    monkeypatch.setenv("TTLX_COMPILE_HELPER", "0")
    assert not latency.times_in_fresh_process(densenet)


def test_the_timed_forward_takes_plain_arrays_and_gives_the_models_output(tinynet):
    import jax
    import numpy as np
    from flax import nnx

    from ttlx.models import create_model

    model = create_model("tinynet", -1, num_classes=3, head="pool", image_size=32, seed=0)
    forward, state, x = latency.forward_program(model, 32)

    def is_variable(leaf):
        return isinstance(leaf, nnx.Variable)

    # no nnx Variables for Python to flatten on every timed call (RESULTS section 8)
    assert not any(map(is_variable, jax.tree.leaves(state, is_leaf=is_variable)))
    model.eval()
    np.testing.assert_allclose(np.asarray(forward(state, x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
