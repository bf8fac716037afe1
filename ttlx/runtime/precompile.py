"""Compile a training run's programs in a helper process, so that the run itself only loads them (CPU).

Why: ttlx keeps glibc's heap in one arena that is never trimmed (``ttlx.runtime.process.tune_malloc``). XLA:CPU's
compile of a big program (DenseNet201's train step has about 6,000 kernels) leaves what it keeps alive
scattered between the blocks it frees, and every later allocation then walks glibc's long free lists:
DenseNet201's steps run about a quarter slower than in a process that loaded the same program from the
persistent cache (``benchmarks/RESULTS.md`` section 2.8). A helper process that builds the same model and
steps, compiles them into the persistent cache and exits leaves the training process a clean heap.

When: on CPU, in a single-process run with the persistent cache on, for architectures that set
``cpu_compile_in_helper`` (ResNet50's steps are not affected and skip it), once per configuration: a
marker in the cache folder records that the helper compiled it, so later runs (repeats, resumes) go
straight to the cache. ``TTLX_COMPILE_HELPER=0`` turns the helper off, ``=1`` uses it for every
architecture. If the helper fails, the run compiles for itself, as it would without it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ttlx import settings

# Part of every marker's key: raise it when what ``ttlx train`` compiles for the same configuration changes,
# so that the helper compiles the new programs once (2: uint8 images, normalised on the device).
PROGRAMS_REVISION = 2


def marker_path(config: dict) -> Path | None:
    """Where the helper records that it compiled ``config`` (None without a persistent cache)."""
    import jax

    folder = jax.config.jax_compilation_cache_dir
    if not folder:
        return None
    program = {key: value for key, value in config.items() if key != "workdir"}
    program["ttlx_programs_revision"] = PROGRAMS_REVISION
    digest = hashlib.sha256(json.dumps(program, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return Path(folder) / "ttlx-compiled" / f"{digest}.json"


def applies(arch) -> bool:
    """Whether this process compiles ``arch``'s programs in a helper (a persistent cache to hand them over
    in, backend, process count, setting and the architecture's ``cpu_compile_in_helper``; not whether this
    configuration was compiled already)."""
    import jax

    setting = settings.compile_helper()
    if setting is False or not jax.config.jax_compilation_cache_dir:
        return False
    if jax.default_backend() != "cpu" or jax.process_count() != 1:
        return False
    return bool(setting) or getattr(arch, "cpu_compile_in_helper", False)


def wanted(config: dict, arch) -> bool:
    """Whether ``config`` should be compiled in a helper process first (see the module docstring)."""
    return applies(arch) and not marker_path(config).is_file()


def compile_first(config: dict, arch, *, target: str, verbose: bool = True) -> None:
    """Where :func:`wanted`, compile ``config`` in a helper and wait; ``verbose`` says so on stderr, and says
    when the helper failed (the caller then compiles for itself, as it would without a helper)."""
    if not wanted(config, arch):
        return
    if verbose:
        print("Compiling this configuration's programs in a helper process (its first run on CPU).",
              file=sys.stderr, flush=True)
    failure = compile_in_helper(config, target)
    if failure and verbose:
        print(f"The compile helper failed ({failure}); compiling in this process instead.", file=sys.stderr,
              flush=True)


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m module args`` in a fresh interpreter like this one. ``-P`` keeps the
    working directory off ``sys.path``: a user's ``attr.py`` or ``ttlx.py`` next to where the command runs
    would otherwise be imported instead of the real module (the ``ttlx`` command itself never does that)."""
    return [sys.executable, "-P", "-m", module, *args]


def compile_in_helper(config: dict, target: str) -> str | None:
    """Run the helper for ``config`` and wait for it; None when it compiled (and the marker is written),
    else the last line it printed, for a note that the caller compiles for itself.

    ``target`` is ``"module:function"``, a function of one JSON-able dict that compiles its programs (the
    training loop's and the latency timer's name themselves, so this layer imports neither). The marker is
    keyed by ``config`` alone, so keep targets' configs apart (the latency timer's is ``{"latency": ...}``)."""
    marker = marker_path(config)
    done = subprocess.run(module_command("ttlx.runtime.precompile", target, json.dumps(config)),
                          capture_output=True, text=True, env={**os.environ, "TTLX_COMPILE_HELPER": "0"})
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit code {done.returncode}"
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(config, sort_keys=True, default=str) + "\n")
    return None


def resolve_target(target: str):
    """The function named by ``"module:function"``."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> None:
    """``python -m ttlx.runtime.precompile MODULE:FUNCTION CONFIG_JSON``: compile one config's programs."""
    from ttlx.runtime.process import configure_process

    target, config = argv if argv is not None else sys.argv[1:]
    configure_process()
    resolve_target(target)(json.loads(config))


if __name__ == "__main__":
    main()
