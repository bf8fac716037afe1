"""Shared fixtures: the tiny test architecture, the in-memory data source and one finished tiny run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_model, fake_data

from fake_data import FakeData  # noqa: E402
from tiny_model import TINYNET, TINYNET3D, tiny_train_config  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """Share compiled programs between tests (and their subprocesses): every tiny run builds and compiles
    the same init, train and eval programs, and XLA:CPU compiles the random init slowly."""
    import jax

    cache = tmp_path_factory.mktemp("jax_cache")
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    return cache


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """The bundled digits set prepared once per session; tests only read it (test_data_prepare has its own)."""
    from ttlx.data.prepare import prepare_dataset

    data_dir = tmp_path_factory.mktemp("digits_data")
    prepare_dataset("digits", data_dir)
    return data_dir


@pytest.fixture(scope="module")
def tinynet():
    """Register the tiny architecture as ``tinynet`` while a test module runs."""
    from ttlx import registry

    registry.models.register("tinynet", TINYNET, package="tests")
    yield TINYNET
    registry.models.unregister("tinynet")


@pytest.fixture(scope="module")
def tinynet3d():
    """Register the tiny 3D architecture as ``tinynet3d`` while a test module runs."""
    from ttlx import registry

    registry.models.register("tinynet3d", TINYNET3D, package="tests")
    yield TINYNET3D
    registry.models.unregister("tinynet3d")


@pytest.fixture
def fake_data():
    return FakeData()


@pytest.fixture(scope="module")
def finished_run(tinynet, tmp_path_factory):
    """A finished 3-epoch tinynet run on fake data (shared by the tests of one module)."""
    from ttlx.training.loop import train

    cfg = tiny_train_config(tmp_path_factory.mktemp("runs") / "finished")
    return train(cfg, progress=False, data=FakeData())
