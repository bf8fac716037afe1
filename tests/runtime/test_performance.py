"""ttlx.runtime.process: the 1x1-conv-as-dot path computes what lax.conv computes; the process settings apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import pytest
from flax import nnx
from jax import lax

from ttlx import settings
from ttlx.models import ops
from ttlx.runtime import process


def conv(x, kernel, stride, padding, fn):
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    return fn(x, kernel, (stride, stride), padding, dimension_numbers=numbers)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_and_its_gradients_match_lax(stride):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 7, 6, 5), np.float32))
    kernel = jnp.asarray(rng.standard_normal((1, 1, 5, 3), np.float32))

    def loss(fn):
        return lambda x, k: jnp.sum(jnp.sin(conv(x, k, stride, ((0, 0), (0, 0)), fn)))

    ours, theirs = loss(ops.conv_general_dilated), loss(lax.conv_general_dilated)
    np.testing.assert_allclose(ours(x, kernel), theirs(x, kernel), rtol=1e-5)
    for got, want in zip(jax.grad(ours, (0, 1))(x, kernel), jax.grad(theirs, (0, 1))(x, kernel), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(ours)(x, kernel))
    assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr


def test_other_convolutions_go_to_lax_unchanged():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 8, 8, 4), np.float32))
    for shape, padding in (((3, 3, 4, 2), ((1, 1), (1, 1))), ((1, 1, 4, 2), ((1, 1), (1, 1)))):
        kernel = jnp.asarray(rng.standard_normal(shape, np.float32))
        ours = conv(x, kernel, 1, padding, ops.conv_general_dilated)
        np.testing.assert_array_equal(ours, conv(x, kernel, 1, padding, lax.conv_general_dilated))


@pytest.mark.slow
def test_models_compute_only_their_1x1_convs_as_dots_with_the_same_output():
    from flax import nnx
    from jax import lax

    from ttlx.models import create_model

    model = create_model("resnet50", 1, layerwise=True, head="pool", num_classes=2, image_size=32)
    model.eval()
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 32, 32, 3), np.float32))
    fast = model(x)
    jaxpr = str(jax.make_jaxpr(lambda x: model(x))(x))
    # the stem and the 3x3 conv2 stay convolutions; conv1, conv3 and the downsample become dots (+ the head)
    assert jaxpr.count("conv_general_dilated[") == 2
    assert jaxpr.count("dot_general[") == 4
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)]
    assert len(convs) == 5 and all(c.conv_general_dilated is ops.conv_general_dilated for c in convs)
    for conv in convs:  # back to XLA's convolution everywhere: the reference
        conv.conv_general_dilated = lax.conv_general_dilated
    assert str(jax.make_jaxpr(lambda x: model(x))(x)).count("conv_general_dilated[") == 5
    np.testing.assert_allclose(fast, model(x), rtol=1e-5, atol=1e-5)


def test_compilation_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "ttlx"))
    monkeypatch.delenv("TTLX_COMPILATION_CACHE", raising=False)
    assert process.compilation_cache_dir() == tmp_path / "ttlx" / "jax-compilation"
    monkeypatch.setenv("TTLX_COMPILATION_CACHE", str(tmp_path / "mine"))
    assert process.compilation_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("TTLX_COMPILATION_CACHE", "off")
    assert process.compilation_cache_dir() is None
    assert process.enable_compilation_cache() is None


def test_malloc_tuning_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("TTLX_TUNE_MALLOC", "0")
    assert process.tune_malloc() is False


@pytest.mark.parametrize(("setting", "cpu_runs_steps", "expected"),
                         [("", False, False), ("", True, True), ("1", False, True), ("0", True, False)])
def test_malloc_is_left_alone_where_an_accelerator_runs_the_steps(monkeypatch, setting, cpu_runs_steps, expected):
    """Tuned only where the CPU runs the steps, unless ``TTLX_TUNE_MALLOC`` says otherwise (mallopt itself
    is replaced: this process keeps its settings)."""
    calls = []

    class FakeLibc:
        gnu_get_libc_version = None

        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(process, "_cpu_backend_expected", lambda: cpu_runs_steps)
    monkeypatch.setattr(process.ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(process.sys, "platform", "linux")
    monkeypatch.setenv("TTLX_TUNE_MALLOC", setting)
    assert process.tune_malloc() is expected
    assert len(calls) == (3 if expected else 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize("trim_threshold", [None, 2**31 - 1])
def test_tuned_malloc_keeps_more_than_2_gib_of_freed_heap(trim_threshold):
    """A DenseNet201 step at batch 16 frees over 2 GiB at once: glibc must keep it, not hand it back.

    In a fresh process, 3 GiB is allocated on the heap (never touched, so it costs no memory) and freed;
    the program break shows whether glibc trimmed the heap. The control case sets the largest positive
    threshold mallopt takes (what ttlx used before), under which glibc does trim.
    """
    override = f"libc.mallopt(-1, {trim_threshold}); " if trim_threshold else ""
    code = ("import ctypes; from ttlx.runtime import process; tuned = process.tune_malloc(); "
            "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p; "
            "libc.malloc.argtypes = [ctypes.c_size_t]; libc.free.argtypes = [ctypes.c_void_p]; "
            f"libc.sbrk.argtypes = [ctypes.c_long]; {override}"
            "block = libc.malloc(3 << 30); assert block; grown = libc.sbrk(0); libc.free(block); "
            "print(tuned, (grown - libc.sbrk(0)) >> 20)")
    env = {**os.environ, "TTLX_TUNE_MALLOC": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    tuned, released_mib = done.stdout.split()
    assert tuned == "True"
    if trim_threshold is None:
        assert int(released_mib) == 0
    else:
        assert int(released_mib) >= 3 * 1024 - 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_configure_process_tunes_malloc_and_fills_the_cache(tmp_path):
    """In a fresh process: a compiled function lands in the configured cache directory."""
    code = ("import json; from ttlx.runtime import process; s = process.configure_process(); "
            "import jax, jax.numpy as jnp; jax.config.update('jax_persistent_cache_min_compile_time_secs', 0); "
            "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready(); print(json.dumps(s))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update({"TTLX_COMPILATION_CACHE": str(tmp_path / "cache"), "TTLX_TUNE_MALLOC": "1"})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    applied = json.loads(done.stdout.splitlines()[-1])
    assert applied["malloc_tuned"] is True
    assert applied["compilation_cache"] == str(tmp_path / "cache" / f"cpus-{settings.schedulable_cpus()}")
    flags = process.XLA_CPU_FLAGS.get(jaxlib.__version__, ())
    assert applied["xla_flags"] == ([] if process._accelerator_plugin_installed() else list(flags))
    assert any((tmp_path / "cache").iterdir())


_PARTITIONED_PROGRAM = (
    "import os, sys; os.sched_setaffinity(0, {cpus}); from ttlx.runtime import process; import jax; {cache}"
    "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0); "
    "jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0); import jax.numpy as jnp; "
    "x = jnp.zeros((16, 14, 14, 1024)); "
    "text = jax.jit(lambda x: jnp.maximum(x * 2 + 1, 0)).lower(x).compile().as_text(); "
    "print('outer_dimension_partitions' in text)")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two schedulable CPUs")
@pytest.mark.parametrize("cache", ["ttlx", "jax"])
def test_a_program_compiled_on_one_core_is_not_reused_on_two(tmp_path, cache):
    """XLA:CPU splits an elementwise loop for as many threads as the process may use when it compiles,
    and JAX's cache key leaves that out. The same program is compiled pinned to one core and then to
    two: through ttlx's cache the second run compiles its own, split program. The control case uses
    JAX's cache directly, where the second run loads the one-core program (if this ever fails, JAX keys
    its cache on the CPU count and the ``cpus-N`` subfolder can go)."""
    two = sorted(os.sched_getaffinity(0))[:2]
    setup = ("process.enable_compilation_cache(); " if cache == "ttlx" else
             f"jax.config.update('jax_compilation_cache_dir', {str(tmp_path / 'jax')!r}); ")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["TTLX_COMPILATION_CACHE"] = str(tmp_path / "ttlx")
    split = []
    for cpus in ({two[0]}, set(two)):
        code = _PARTITIONED_PROGRAM.format(cpus=cpus, cache=setup)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        split.append(done.stdout.split()[-1] == "True")
    assert split == ([False, True] if cache == "ttlx" else [False, False])
    if cache == "ttlx":
        assert sorted(p.name for p in (tmp_path / "ttlx").iterdir()) == ["cpus-1", "cpus-2"]


def test_xla_flags_are_added_once_and_never_over_the_users(monkeypatch):
    flag = "--xla_cpu_some_flag=1"
    monkeypatch.setitem(process.XLA_CPU_FLAGS, jaxlib.__version__, (flag,))
    monkeypatch.setattr(process, "_accelerator_plugin_installed", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert process.set_xla_cpu_flags() == [flag]
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {flag}"
    assert process.set_xla_cpu_flags() == []
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_some_flag=0")
    assert process.set_xla_cpu_flags() == []
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_some_flag=0"
    monkeypatch.setattr(process, "_accelerator_plugin_installed", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert process.set_xla_cpu_flags() == []  # GPU/TPU machines: the CPU flags are not needed


def torch_rule_max_pool_grad(x: np.ndarray, grad: np.ndarray, window: int, stride: int, pad: int) -> np.ndarray:
    """Independent reference: loop over windows, the gradient to the first maximum in row-major order
    (what torch's CPU MaxPool2d backward does)."""
    n, h, w, c = x.shape
    padded = np.full((n, h + 2 * pad, w + 2 * pad, c), -np.inf, x.dtype)
    padded[:, pad: pad + h, pad: pad + w] = x
    out = np.zeros(padded.shape, np.float64)
    for b in range(n):
        for i in range(grad.shape[1]):
            for j in range(grad.shape[2]):
                for ch in range(c):
                    patch = padded[b, i * stride: i * stride + window, j * stride: j * stride + window, ch]
                    di, dj = np.unravel_index(np.argmax(patch), patch.shape)  # argmax: first maximum
                    out[b, i * stride + di, j * stride + dj, ch] += grad[b, i, j, ch]
    return out[:, pad: pad + h, pad: pad + w]


@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize(("shape", "window", "stride", "pad"), [
    ((2, 9, 9, 3), 3, 2, 1), ((1, 8, 10, 2), 3, 2, 1), ((2, 6, 6, 2), 2, 2, 0), ((1, 7, 7, 1), 3, 1, 1)])
def test_max_pool_matches_flax_forward_and_the_first_maximum_gradient(shape, window, stride, pad, unroll):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x[..., 0] = np.round(x[..., 0])  # many ties in one channel: the first maximum of a window wins
    padding = ((pad, pad), (pad, pad))
    expected = nnx.max_pool(jnp.asarray(x), (window, window), strides=(stride, stride), padding=padding)
    y = ops.max_pool(jnp.asarray(x), window, stride, pad, unroll)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(expected))
    grad = rng.standard_normal(y.shape).astype(np.float32)
    _, vjp = jax.vjp(lambda v: ops.max_pool(v, window, stride, pad, unroll), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(grad))[0]),
                               torch_rule_max_pool_grad(x, grad, window, stride, pad), rtol=1e-6, atol=1e-6)


def test_max_pool_gradient_equals_jax_autodiff_without_ties_in_bfloat16_too():
    x = jax.random.normal(jax.random.key(1), (2, 12, 12, 4))
    for dtype, tol in ((jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)):
        v = x.astype(dtype)
        ours = jax.grad(lambda v: jnp.sum(jnp.sin(ops.max_pool(v, 3, 2, 1).astype(jnp.float32))))(v)
        flax_grad = jax.grad(lambda v: jnp.sum(jnp.sin(nnx.max_pool(v, (3, 3), strides=(2, 2), padding=(
            (1, 1), (1, 1))).astype(jnp.float32))))(v)
        assert ours.dtype == dtype
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(flax_grad, np.float32), atol=tol)


@pytest.mark.parametrize(("plugin", "platforms", "expected"),
                         [(False, "", True), (True, "cuda,cpu", False), (True, "cpu,cuda", True), (True, "CPU", True)])
def test_the_cpu_runs_the_steps_unless_an_accelerator_plugin_is_there_and_chosen(monkeypatch, plugin, platforms,
                                                                              expected):
    monkeypatch.setattr(process, "_accelerator_plugin_installed", lambda: plugin)
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert process._cpu_backend_expected() is expected


def _train_loss_and_grads(model, x):
    """Loss and parameter gradients of one training-mode forward (BatchNorm on batch statistics), eagerly, so
    that each call traces under the backend in force at that moment."""
    model.train()
    value, grads = nnx.value_and_grad(lambda m: jnp.mean(jnp.square(m(x) - 0.5)))(model)
    return value, jax.tree.leaves(grads)


def _forward_jaxpr(model, x) -> str:
    model.eval()
    return str(jax.make_jaxpr(lambda x: model(x))(x))


@pytest.mark.slow
def test_accelerator_formulations_compute_what_the_cpu_ones_do(monkeypatch):
    """On GPUs and TPUs the stem convolution runs as space-to-depth, BatchNorm statistics in one pass and the
    stem pooling's gradient unrolled (RESULTS section 7.2): the same network, in float32 to rounding."""
    from ttlx.models import create_model, layers

    model = create_model("resnet50", 1, layerwise=True, head="pool", num_classes=2, image_size=32)
    # Batch 16 and seed 0: with 4 images of seed 3 one ReLU/pooling choice sits within rounding of a tie and
    # flips between routes on some CPUs (AVX-512), moving whole gradients by 1-2%; a discontinuity, not an error.
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 32, 32, 3), np.float32))
    cpu_loss, cpu_grads = _train_loss_and_grads(model, x)
    cpu_jaxpr = _forward_jaxpr(model, x)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    gpu_loss, gpu_grads = _train_loss_and_grads(model, x)
    gpu_jaxpr = _forward_jaxpr(model, x)
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=1e-5)
    # Compared by the relative norm of the difference (measured 1e-6..4e-5 on Intel and AMD): element-wise
    # tolerances fail on elements near zero, whose rounding depends on the CPU's vector units.
    for ours, theirs in zip(gpu_grads, cpu_grads, strict=True):
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        scale = max(float(np.linalg.norm(theirs)), np.finfo(np.float32).tiny)
        assert float(np.linalg.norm(ours - theirs)) / scale < 1e-3
    # the accelerator program takes the other routes: a 4x4 stem over 12 channels, no 1x1 convs as dots
    assert "f32[4,4,12,64]" not in cpu_jaxpr and cpu_jaxpr.count("dot_general[") > 1
    assert "f32[4,4,12,64]" in gpu_jaxpr and gpu_jaxpr.count("dot_general[") == 1  # only the head
    with ops.xla_convolutions():  # MAC counting reads the plain 7x7 convolution on every backend
        assert "f32[4,4,12,64]" not in _forward_jaxpr(model, x)
    odd = jnp.zeros((1, 33, 33, 3), jnp.float32)  # odd sides: the plain convolution
    assert "f32[4,4,12,64]" not in _forward_jaxpr(model, odd)
    # one-pass moments clamp the rounding of a constant channel at 0
    constant = jnp.full((2, 4, 4, 3), 3.1, jnp.float32)
    mean, var = layers.batch_moments(constant)
    np.testing.assert_allclose(mean, 3.1, rtol=1e-6)
    assert bool(jnp.all(var >= 0)) and float(jnp.max(var)) < 1e-5


class Cycle:
    """An object that refers to itself: only the cyclic garbage collector frees it."""

    def __init__(self):
        self.me = self


def test_heap_frozen_spares_what_lived_on_entry_and_frees_it_after():
    import gc
    import weakref

    old, new = Cycle(), None
    old_ref = weakref.ref(old)
    with process.heap_frozen():
        assert gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert old_ref() is not None  # frozen on entry: collections leave it alone
        new = Cycle()
        new_ref = weakref.ref(new)
        del new
        gc.collect()
        assert new_ref() is None  # made inside: collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert old_ref() is None  # collectable again after the block
