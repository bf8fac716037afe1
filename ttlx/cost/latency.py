"""Batch-1 latency: the median wall time of a jit-compiled eval-mode forward pass (the paper's T column).

Where it is timed: in the calling process, except on CPU for the architectures whose programs ttlx
compiles in a helper process (``cpu_compile_in_helper``, DenseNet201; see :mod:`ttlx.runtime.precompile`).
Compiling such a network in the timing process leaves XLA's compile-time garbage in glibc's heap, and the
forward pass then runs slower: DenseNet201 at 224 px on 2 cores took 71 ms when compiled in the timing
process against 62 ms when a helper had compiled it (``benchmarks/RESULTS.md`` section 2.9). A
process that compiled something else that big first (``ttlx eval``'s evaluation step) is slowed the same
way. So there the timing runs in a fresh process (``python -m ttlx.cost.latency``) on the same network
with zero weights (a forward pass takes as long whatever its weights hold; the architecture, cut, head,
input size and dtype are the config's), and that process loads a forward that the helper compiled into
the persistent cache. If the fresh process fails, the caller times in-process and prints one line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from ttlx.config import ModelConfig
from ttlx.models.abstract import abstract_model, input_shape, zero_weight_model
from ttlx.runtime import precompile

HELPER_KIND = "latency"  # the compile helper's entry for a forward pass (``ttlx.runtime.precompile``)


def forward_program(model: nnx.Module, image_size: int):
    """(jitted eval-mode forward, the model's state, a batch-1 input) as timed; the caller's model keeps
    its train/eval mode. The state is passed as plain arrays (``nnx.as_pure``), as the train and evaluation
    steps take theirs: with nnx Variables, Python flattens each of them on every call (RESULTS section 8)."""
    graphdef, state = nnx.split(model)
    state = nnx.as_pure(state)

    @jax.jit
    def forward(state, x):
        net = nnx.merge(graphdef, state)
        net.eval()
        return net(x)

    return forward, state, jax.random.normal(jax.random.key(0), input_shape(model, image_size), jnp.float32)


def measure_latency(model: nnx.Module, image_size: int, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in ms of ``repeats`` forward passes in this process, after ``warmup`` runs (the
    first of which compiles, or loads from the persistent cache)."""
    forward, state, x = forward_program(model, image_size)
    for _ in range(max(warmup, 1)):
        forward(state, x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(state, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def zero_weight_network(cfg: ModelConfig) -> nnx.Module:
    """``cfg``'s network with every weight zero (no random initialisation, so nothing else compiles)."""
    from ttlx.models import get_architecture

    return zero_weight_model(abstract_model(get_architecture(cfg.arch), cfg))


def compile_forward(cfg: ModelConfig) -> None:
    """Compile the timed forward pass of ``cfg`` into the persistent cache (the helper's job)."""
    forward, state, x = forward_program(zero_weight_network(cfg), cfg.image_size)
    forward.lower(state, x).compile()


def compile_forward_of(config: dict) -> None:
    """:func:`compile_forward` of ``{"latency": model config dict}``: the target ``ttlx.runtime.precompile``
    runs in its helper."""
    compile_forward(ModelConfig.from_dict(config[HELPER_KIND]))


def times_in_fresh_process(cfg: ModelConfig) -> bool:
    from ttlx.models import get_architecture

    return precompile.applies(get_architecture(cfg.arch))


def latency_ms(cfg: ModelConfig, model: nnx.Module | None = None, *, repeats: int = 20, warmup: int = 3) -> float:
    """Batch-1 latency of ``cfg``'s network: ``model`` (else the network with zero weights) timed here, or
    the zero-weight network in a fresh process where the module docstring says so."""
    if times_in_fresh_process(cfg):
        measured = _time_in_fresh_process(cfg, repeats, warmup)
        if measured is not None:
            return measured
    timed = model if model is not None else zero_weight_network(cfg)
    return measure_latency(timed, cfg.image_size, repeats=repeats, warmup=warmup)


def _time_in_fresh_process(cfg: ModelConfig, repeats: int, warmup: int) -> float | None:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(jax.config.jax_compilation_cache_dir)}
    command = precompile.module_command("ttlx.cost.latency", json.dumps(cfg.to_dict()), str(repeats),
                                        str(warmup))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            return float(json.loads(lines[-1])["latency_ms"])
        except (ValueError, KeyError, TypeError):
            pass
    why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    print(f"ttlx: timing the forward pass in a fresh process failed ({why}); timing it in this process, "
          "where an earlier compile can make it slower.", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> None:
    """``python -m ttlx.cost.latency MODEL_CONFIG_JSON REPEATS WARMUP``: print ``{"latency_ms": ...}``."""
    config_json, repeats, warmup = argv if argv is not None else sys.argv[1:]
    from ttlx.runtime.process import configure_process

    configure_process()  # before anything (a plugin found by the registry) can start JAX's backends
    from ttlx.models import get_architecture

    cfg = ModelConfig.from_dict(json.loads(config_json))
    precompile.compile_first({HELPER_KIND: cfg.to_dict()}, get_architecture(cfg.arch),
                             target="ttlx.cost.latency:compile_forward_of")
    latency = measure_latency(zero_weight_network(cfg), cfg.image_size, repeats=int(repeats), warmup=int(warmup))
    print(json.dumps({"latency_ms": latency}))


if __name__ == "__main__":
    main()
