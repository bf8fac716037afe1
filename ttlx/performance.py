"""Speed settings: JAX's persistent compilation cache, glibc's allocator, XLA:CPU flags, Python's garbage
collector in the training loop, fast 1x1 convs, the accelerators' space-to-depth stem, and max pooling.

None of these change what is computed, only the order of float rounding (the accelerators' one-pass
BatchNorm statistics, ``ttlx.models.layers.batch_moments``, the most). ``configure_process()`` is meant to
run once at the start of a command that compiles (before JAX starts its threads); ``conv_general_dilated``
is a drop-in for the function ``nnx.Conv`` calls. Measurements behind each choice are in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import gc
import importlib.util
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

CACHE_ENV = "TTLX_COMPILATION_CACHE"  # a directory, or 0/off/false to disable the cache
CACHE_MAX_BYTES = 4 * 2**30  # least recently used programs are evicted beyond this
MALLOC_ENV = "TTLX_TUNE_MALLOC"  # 0/off/false: glibc's defaults; 1/on/true: tune even with an accelerator
_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")

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
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    from ttlx.models.download import cache_dir

    return cache_dir() / "jax-compilation"


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Keep compiled XLA programs on disk so a second run of the same step skips most of its compile.

    Must run before the first compilation of the process (JAX fixes its cache at the first compile).
    Returns the cache directory, or None when disabled through ``$TTLX_COMPILATION_CACHE``.

    On CPU, programs go to a subfolder per number of schedulable CPUs (``cpus-2``): XLA:CPU splits
    elementwise loops for as many threads as the compiling process may run on, and JAX's cache key
    leaves that out, so a program compiled on one pinned core would be loaded, unsplit, by a run on 32
    (RESULTS section 2.8). A cache set through JAX's own ``jax_compilation_cache_dir`` is used as given.
    """
    folder = Path(path).expanduser() if path is not None else compilation_cache_dir()
    if folder is None:
        return None
    if path is None and jax.config.jax_compilation_cache_dir:  # a cache set through JAX's own option wins
        return Path(jax.config.jax_compilation_cache_dir)
    if _cpu_backend_expected():
        folder = folder / f"cpus-{schedulable_cpus()}"
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
    setting = os.environ.get(MALLOC_ENV, "").lower()
    if sys.platform != "linux" or setting in _OFF or (setting not in _ON and not _cpu_backend_expected()):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt tunables)
    except (OSError, AttributeError):
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, NEVER_TRIM))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


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


def schedulable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask), which is what XLA:CPU compiles for."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


# --- 1x1 convolutions as dots ------------------------------------------------------------------------


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 1x1, stride-1, unpadded convolution of NHWC ``x`` with a [C, D] ``kernel``, as one dot."""
    return lax.dot_general(x, kernel, (((3,), (0,)), ((), ())))


def _pointwise_fwd(x, kernel):
    return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_bwd(residuals, grad):
    # Both gradients as plain row-major dots over the (N*H*W) rows. Left to autodiff of a convolution,
    # XLA:CPU transposes activations to [C, H, W, N] for the kernel gradient (and re-computes the
    # preceding BatchNorm inside that transpose), which cost a third of a ResNet50 training step.
    x, kernel = residuals
    rows_x = x.reshape(-1, x.shape[-1])
    rows_grad = grad.reshape(-1, grad.shape[-1])
    grad_x = lax.dot_general(rows_grad, kernel, (((1,), (1,)), ((), ()))).reshape(x.shape)
    grad_kernel = lax.dot_general(rows_x, rows_grad, (((0,), (0,)), ((), ())))
    return grad_x, grad_kernel.astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_fwd, _pointwise_bwd)


def _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                   extra: dict) -> bool:
    """An NHWC/HWIO convolution with no dilation, groups or extra options."""
    if lhs.ndim != 4 or feature_group_count != 1 or any(extra.values()):
        return False
    if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
        return False
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def _is_plain_pointwise(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                        feature_group_count, extra: dict) -> bool:
    """A 1x1 NHWC/HWIO convolution with no padding, dilation, groups or extra options."""
    if rhs.shape[:2] != (1, 1) or isinstance(padding, str) or any(tuple(p) != (0, 0) for p in padding):
        return False
    return _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)


def _is_stem(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
             feature_group_count, extra: dict) -> bool:
    """torchvision's stem convolution: 7x7, stride 2, padding 3, at most 4 input channels, even height and
    width, NHWC/HWIO."""
    if lhs.ndim != 4 or rhs.shape[:2] != (7, 7) or rhs.shape[2] > 4 or tuple(window_strides) != (2, 2):
        return False
    if isinstance(padding, str) or [tuple(p) for p in padding] != [(3, 3), (3, 3)]:
        return False
    if lhs.shape[1] % 2 or lhs.shape[2] % 2:
        return False
    return _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)


def space_to_depth_stem(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 7x7, stride-2, padding-3 convolution of NHWC ``x`` (even height and width) with an HWIO ``kernel``,
    computed as a 4x4 stride-1 convolution over 2x2 pixel blocks stacked into channels (the kernel
    zero-padded to 8x8 and stacked the same way): the same sums plus zero taps.

    For tensor cores XLA pads a bfloat16 convolution's input channels to a multiple of 8, so the stem's 3
    channels cost as 8; as 12 they cost 16 for a quarter of the positions. With the one-pass BatchNorm
    statistics and the unrolled pooling gradient it took a ResNet50 train step on an H100 from 31.9 to 27.0 ms
    (FTL) and from 25.7 to 22.3 ms (TTL-2) at batch 128 in bfloat16 (RESULTS section 7.2)."""
    n, height, width, channels = x.shape
    padded = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    rows, cols = (height + 6) // 2, (width + 6) // 2
    blocks = padded.reshape(n, rows, 2, cols, 2, channels).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(n, rows, cols, 4 * channels)
    taps = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    taps = taps.reshape(4, 2, 4, 2, channels, -1).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4, 4 * channels, -1)
    return lax.conv_general_dilated(blocks, taps, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


_POINTWISE_AS_DOT = contextvars.ContextVar("ttlx_pointwise_as_dot", default=True)


@contextlib.contextmanager
def xla_convolutions():
    """Trace every convolution as the ``lax.conv_general_dilated`` it stands for, with neither the CPU's dots
    nor the accelerators' space-to-depth stem (for tools that read the jaxpr, e.g. MACs)."""
    token = _POINTWISE_AS_DOT.set(False)
    try:
        yield
    finally:
        _POINTWISE_AS_DOT.reset(token)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated`` (the signature ``nnx.Conv`` calls), with 1x1 convs as dots on CPU and
    the 7x7 stride-2 stem as :func:`space_to_depth_stem` on accelerators.

    Same sums, same result up to float rounding order; other convolutions go to
    ``lax.conv_general_dilated`` unchanged.
    """
    extra = {"precision": precision, **kwargs}
    if _POINTWISE_AS_DOT.get():
        arguments = (lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, extra)
        on_cpu = jax.default_backend() == "cpu"
        if on_cpu and _is_plain_pointwise(lhs, rhs, padding, *arguments):
            strides = tuple(window_strides)
            if strides != (1, 1):
                lhs = lhs[:, :: strides[0], :: strides[1], :]
            return pointwise_conv(lhs, rhs[0, 0])
        if not on_cpu and _is_stem(lhs, rhs, window_strides, padding, *arguments):
            return space_to_depth_stem(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count, precision=precision, **kwargs)


# --- max pooling with a gradient that needs no index arrays ---------------------------------------------


def _pool_padding(pad: int) -> tuple:
    return ((0, 0), (pad, pad), (pad, pad), (0, 0))


def _max_pool_forward(x: jax.Array, window: int, stride: int, pad: int) -> jax.Array:
    init = jnp.array(-jnp.inf, x.dtype)
    return lax.reduce_window(x, init, lax.max, (1, window, window, 1), (1, stride, stride, 1), _pool_padding(pad))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def max_pool(x: jax.Array, window: int, stride: int, pad: int, unroll: bool = False) -> jax.Array:
    """Max pooling of NHWC ``x`` (square window, -inf padding), as torch's ``MaxPool2d``.

    Same forward values as ``nnx.max_pool``. The gradient goes to the first maximum of each window in
    row-major order (torch's choice). JAX's generic rule for ``reduce_window`` max materialises four int32
    index arrays of the padded input's size and reduces over (value, index) pairs: on XLA:CPU about
    190 ms of a ResNet50 step at batch 16 (this: 48 ms, forward included; torch 147 ms).

    ``unroll``: sum the taps' gradients in one unrolled expression (one fused pass over the input on a
    GPU) instead of a loop over taps (what XLA:CPU needs; see ``_max_pool_bwd``).
    """
    return _max_pool_forward(x, window, stride, pad)


def _max_pool_fwd(x, window, stride, pad, unroll):
    y = _max_pool_forward(x, window, stride, pad)
    return y, (x, y)


def _max_pool_bwd(window, stride, pad, unroll, residuals, grad):
    x, y = residuals
    n, _, _, c = x.shape
    padded = jnp.pad(x, _pool_padding(pad), constant_values=-jnp.inf)
    height, width = padded.shape[1:3]
    rows, cols = y.shape[1:3]
    # which tap (row-major offset in the window) is each window's first maximum
    taken = jnp.zeros(y.shape, bool)
    first = jnp.zeros(y.shape, jnp.int8)
    for tap in range(window * window):
        di, dj = divmod(tap, window)
        view = lax.slice(padded, (0, di, dj, 0), (n, di + stride * (rows - 1) + 1, dj + stride * (cols - 1) + 1, c),
                         (1, stride, stride, 1))
        hit = (view == y) & ~taken
        taken = taken | hit
        first = jnp.where(hit, jnp.int8(tap), first)
    zero = jnp.zeros((), grad.dtype)
    spread_pad = ((0, 0, 0), (0, height - stride * (rows - 1) - 1, stride - 1),
                  (0, width - stride * (cols - 1) - 1, stride - 1), (0, 0, 0))
    margin = ((0, 0), (window - 1, 0), (window - 1, 0), (0, 0))

    def add_tap(tap, total):
        # the gradient of the windows whose maximum is this tap, spread to the windows' corners (stride
        # apart) and shifted by the tap's offset. A loop rather than nine unrolled taps: XLA:CPU would
        # otherwise fuse whatever produced ``grad`` into every tap and compute it up to nine times
        # (in DenseNet201 the sum over dense block 1's layers: 390 ms).
        di, dj = tap // window, tap % window
        spread = jnp.pad(lax.pad(jnp.where(first == tap, grad, zero), zero, spread_pad), margin)
        return total + lax.dynamic_slice(spread, (0, window - 1 - di, window - 1 - dj, 0), padded.shape)

    total = jnp.zeros(padded.shape, grad.dtype)
    if unroll:
        for tap in range(window * window):
            total = add_tap(tap, total)
    else:
        total = lax.fori_loop(0, window * window, add_tap, total)
    return (total[:, pad: height - pad, pad: width - pad, :],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
