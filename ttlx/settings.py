"""Every ``TTLX_*`` environment variable ttlx reads, and the CPU count this process may use.

This module is the only reader of ``TTLX_*`` variables: each has one entry in :data:`SETTINGS` (the table
``docs/reference/environment.md`` shows) and one function here that parses it. A value that cannot be
parsed stops the command with one sentence naming the variable and what it takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ttlx.errors import ConfigError

_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str


SETTINGS = (
    Setting("TTLX_DATA_DIR", "./data", "Where `ttlx prepare` stores datasets and every command finds them."),
    Setting("TTLX_RUNS_DIR", "./runs", "Where `ttlx train` puts a run dir when `--workdir` is not given."),
    Setting("TTLX_CACHE_DIR", "~/.cache/ttlx", "Converted weights, downloads and the compilation cache."),
    Setting("TTLX_PLUGINS", "(all)", "Comma-separated distributions whose plugins load (ttlx's own always do)."),
    Setting("TTLX_COMPILATION_CACHE", "<cache dir>/jax-compilation",
            "Folder of JAX's persistent compilation cache; `0` turns it off."),
    Setting("TTLX_COMPILE_HELPER", "(per architecture)",
            "`0`: never precompile in a helper process; `1`: for every architecture (CPU only)."),
    Setting("TTLX_TUNE_MALLOC", "(CPU only)", "`0`: keep glibc's allocator defaults; `1`: tune it on GPU hosts too."),
    Setting("TTLX_LOADER_THREADS", "min(4, CPUs)", "grain read threads per loading process."),
    Setting("TTLX_DEVICE_PREFETCH", "0", "Batches a thread places on the devices ahead of the train step."),
    Setting("TTLX_BOOTSTRAP_WORKERS", "min(8, CPUs)", "Processes that score the bootstrap's resamplings."),
)
_NAMES = {setting.name for setting in SETTINGS}


def _raw(name: str) -> str:
    assert name in _NAMES, f"{name} is not in ttlx.settings.SETTINGS"
    return os.environ.get(name, "").strip()


def _switch(name: str) -> bool | None:
    """True, False, or None where unset (the caller's default applies)."""
    value = _raw(name).lower()
    if not value:
        return None
    if value in _ON or value in _OFF:
        return value in _ON
    raise ConfigError(f"{name}={value!r} is not a switch; set it to 1 or 0, or unset it.")


def _count(name: str, minimum: int) -> int | None:
    value = _raw(name)
    if not value:
        return None
    if not value.isdigit() or int(value) < minimum:
        raise ConfigError(f"{name}={value!r} is not a whole number of at least {minimum}; set one or unset it.")
    return int(value)


def data_dir() -> Path:
    return Path(_raw("TTLX_DATA_DIR") or "data")


def runs_dir() -> Path:
    return Path(_raw("TTLX_RUNS_DIR") or "runs")


def cache_dir() -> Path:
    value = _raw("TTLX_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "ttlx"


def plugin_packages() -> set[str] | None:
    """The distributions whose plugins may load, or None for all of them."""
    value = _raw("TTLX_PLUGINS")
    return {p.strip() for p in value.split(",") if p.strip()} if value else None


def compilation_cache_dir() -> Path | None:
    """The persistent compilation cache's folder; None when turned off."""
    value = _raw("TTLX_COMPILATION_CACHE")
    if value.lower() in _OFF:
        return None
    return Path(value).expanduser() if value else cache_dir() / "jax-compilation"


def compile_helper() -> bool | None:
    return _switch("TTLX_COMPILE_HELPER")


def tune_malloc() -> bool | None:
    return _switch("TTLX_TUNE_MALLOC")


def loader_threads() -> int | None:
    return _count("TTLX_LOADER_THREADS", 1)


def device_prefetch() -> int:
    return _count("TTLX_DEVICE_PREFETCH", 0) or 0


def bootstrap_workers() -> int | None:
    return _count("TTLX_BOOTSTRAP_WORKERS", 1)


def schedulable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask, which ``taskset`` and SLURM set), not how
    many the machine has; XLA:CPU compiles for this many threads and the loaders size themselves by it."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
