"""Process settings for speed: JAX's persistent compilation cache, glibc's allocator, XLA:CPU flags and
Python's garbage collector in the training loop.

None of these change what is computed. ``configure_process()`` is meant to run once at the start of a
command that compiles (before JAX starts its threads). The numerics that are a speed choice live in
``ttlx.models.ops``. Measurements behind each choice are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib.util
import os
import sys
from pathlib import Path

import jax

from ttlx import settings
from ttlx.runtime import compile_cache

CACHE_MAX_BYTES = 4 * 2**30  # least recently used programs are evicted beyond this

# XLA:CPU flags per jaxlib version they were measured on. jaxlib 0.10.2 runs YNNPACK's convolutions on
# one thread (a 3x3 conv takes 37 ms on one core and on two); without them XLA's own convolutions use
# every core and a ResNet50 step at batch 16 on 2 cores is 8% faster. Unknown flags abort XLA at
# start-up, hence the exact version list.
XLA_CPU_FLAGS = {"0.10.2": ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)}

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# glibc stores the trim threshold as a size_t, so mallopt's int -1 means "never trim". The largest positive
# int (2 GiB, used before) is less than one DenseNet201 step's buffers at batch 16: glibc then gave them back
# after every step and the next step faulted 3.3 GB in again (813,000 faults, a third of the step).
NEVER_TRIM = -1


def compilation_cache_dir() -> Path | None:
    """``$TTLX_COMPILATION_CACHE``, else ``<ttlx cache dir>/jax-compilation``; None when disabled."""
    return settings.compilation_cache_dir()


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Keep compiled XLA programs on disk so a second run of the same step skips most of its compile.

    Must run before the first compilation of the process (JAX fixes its cache at the first compile).
    Returns the cache directory, or None when disabled through ``$TTLX_COMPILATION_CACHE``.

    On CPU, programs go to a subfolder per number of schedulable CPUs (``cpus-2``): XLA:CPU splits
    elementwise loops for as many threads as the compiling process may run on, and JAX's cache key
    leaves that out, so a program compiled on one pinned core would be loaded, unsplit, by a run on 32
    (RESULTS section 2.8). A cache set through JAX's own ``jax_compilation_cache_dir`` is used as given.
    Several processes may share the folder at once (:mod:`ttlx.runtime.compile_cache`).
    """
    folder = Path(path).expanduser() if path is not None else compilation_cache_dir()
    if folder is None:
        return None
    compile_cache.install()  # whole-or-nothing entries, shared safely by several processes
    if path is None and jax.config.jax_compilation_cache_dir:  # a cache set through JAX's own option wins
        return Path(jax.config.jax_compilation_cache_dir)
    if _cpu_backend_expected():
        folder = folder / f"cpus-{settings.schedulable_cpus()}"
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if importlib.util.find_spec("filelock") is not None:  # JAX's eviction needs it (huggingface_hub has it)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return folder


def tune_malloc() -> bool:
    """Make glibc keep freed memory in the process: one arena, no mmap'd blocks, never trimming the heap.

    Why: XLA:CPU allocates each step's temporary buffers afresh; glibc serves big blocks with mmap and
    hands them back on free, so every step page-faults its whole working set again (about 400,000
    faults, 0.8 s of CPU, in a ResNet50 step at batch 16, 224 px). Call it before JAX creates its
    threads: a thread keeps the arena it first used. Returns False where it does not apply.

    Only where the steps run on the CPU (no accelerator plugin installed, or ``JAX_PLATFORMS=cpu``
    first): on a GPU the step's buffers live on the device, so keeping the host heap at its peak and
    every host thread in one arena buys nothing (``$TTLX_TUNE_MALLOC=1`` tunes there too).
    """
    setting = settings.tune_malloc()
    if sys.platform != "linux" or setting is False or (setting is None and not _cpu_backend_expected()):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt tunables)
    except (OSError, AttributeError):
        return False
    options = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, NEVER_TRIM))
    return all(libc.mallopt(param, value) == 1 for param, value in options)


def set_xla_cpu_flags() -> list[str]:
    """Add this jaxlib's entry of :data:`XLA_CPU_FLAGS` to ``$XLA_FLAGS``; returns the flags added.

    Takes effect only before JAX starts its backends. A flag already named in ``$XLA_FLAGS`` is left
    as the user set it. Nothing is added where an accelerator plugin is installed: the flags only
    matter on CPU, and a plugin parses ``$XLA_FLAGS`` with its own list of known flags.
    """
    import jaxlib

    if _accelerator_plugin_installed():
        return []
    current = os.environ.get("XLA_FLAGS", "")
    added = [flag for flag in XLA_CPU_FLAGS.get(jaxlib.__version__, ())
             if flag.split("=", 1)[0] not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def _cpu_backend_expected() -> bool:
    """True unless an accelerator plugin is installed and JAX is not told to use the CPU first."""
    platforms = os.environ.get("JAX_PLATFORMS", "") or (jax.config.jax_platforms or "")
    return platforms.split(",")[0].strip().lower() == "cpu" or not _accelerator_plugin_installed()


@functools.cache
def _accelerator_plugin_installed() -> bool:  # scans every installed distribution: once per process
    from importlib import metadata

    prefixes = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")
    return any((dist.metadata["Name"] or "").lower().startswith(prefixes) for dist in metadata.distributions())


def configure_process() -> dict:
    """Apply every process-level setting; returns what was applied (for logs and benchmark records)."""
    malloc = tune_malloc()
    flags = set_xla_cpu_flags()
    cache = enable_compilation_cache()
    return {"malloc_tuned": malloc, "xla_flags": flags, "compilation_cache": str(cache) if cache else None}


# --- Python's garbage collector in the training loop ----------------------------------------------------


def freeze_heap() -> None:
    """Collect the garbage there is, then exempt every object alive now from later collections.

    Every train step makes new container objects (the state's pytree, the batch, the loader's buffers), so
    Python's cyclic collector runs now and then, and every so often a full collection walks the whole heap:
    the 200,000 objects JAX, Flax and the traced steps leave there, ~100 ms each time, while the device runs
    out of work. When the train state still held nnx Variables (~1,800 new objects per ResNet50 step) that was
    a full collection every ~17 steps, 6 of the 11 ms the host spent per step (RESULTS section 8).
    ``gc.freeze`` moves the live objects where collections no longer look; objects made later are collected
    as before. Call it only inside :func:`heap_frozen`, which makes them collectable again when the loop ends.
    """
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def heap_frozen():
    """Objects alive on entry are left out of garbage collections until exit (:func:`freeze_heap`; call that
    again inside to add what was made since, e.g. a step's compiled program once it ran). On exit every
    object is collectable again, so a run's model and device buffers can be freed after it (``ttlx sweep``
    runs one run after another in one process)."""
    freeze_heap()
    try:
        yield
    finally:
        gc.unfreeze()

