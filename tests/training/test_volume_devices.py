"""A 3D network trains on windows over several devices as over one: data parallel is not 2D-only."""

import json
import os
import subprocess
import sys

import pytest

from ttlx.data.prepare import prepare_dataset
from ttlx.runs.run_dir import RunDir
from ttlx.training.loop import TIMING_COLUMNS


def _train(data_dir, workdir, devices: int) -> list[dict]:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    done = subprocess.run(
        [sys.executable, "-m", "ttlx.cli", "train", "--dataset", "synthetic3d", "--data-dir", str(data_dir),
         "--model", "r3d_18", "--trunc", "1", "--pretrained", "random", "--head", "pool", "--image-size", "32",
         "--window", "8", "--bs", "4", "--max-epoch", "1", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(json.loads((workdir / "config.json").read_text())["devices"]) == devices
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in RunDir(workdir).read_metrics()]


@pytest.mark.slow
def test_r3d_18_on_two_devices_gives_the_losses_of_one(tmp_path):
    prepare_dataset("synthetic3d", tmp_path / "data", count=20, slices=16, size=32)
    two, one = _train(tmp_path / "data", tmp_path / "two", 2), _train(tmp_path / "data", tmp_path / "one", 1)
    assert len(two) == len(one) == 1
    for a, b in zip(two, one, strict=True):
        for key in ("train_loss", "val_loss"):
            # the same global batch; BatchNorm's statistics are over it on both; only the order of additions
            # differs (losses, not rankings: a near-tie between two windows could swap on another CPU)
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["epoch"], key)
