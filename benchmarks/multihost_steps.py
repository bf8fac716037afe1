"""The cost of crossing processes: train steps/s of 2 processes x 1 device against 1 process x 2 (virtual) devices
at the same global batch, as whole ``ttlx train`` runs on this machine's CPU.

Both layouts train the same run (digits at 32 px, ResNet50 truncated at block 1, random init, global batch
32): the processes of the first are joined by ``--multihost`` on 127.0.0.1 and sum their gradients through
gloo; the second splits each batch over two XLA:CPU devices of one process. Each epoch's ``images_per_s`` in
``metrics.jsonl`` counts the train steps only (not validation); epoch 1 holds the compile and is left out.

    python benchmarks/multihost_steps.py --data-dir DIR [--epochs 4] [--repeats 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(workdir: Path, data_dir: Path, epochs: int, bs: int) -> list[str]:
    return [sys.executable, "-m", "ttlx.cli", "train", "--dataset", "digits", "--data-dir", str(data_dir), "--model",
            "resnet50", "--trunc", "1", "--pretrained", "random", "--image-size", "32", "--max-epoch", str(epochs),
            "--bs", str(bs), "--workdir", str(workdir), "--no-progress"]


def run_layout(processes: int, devices: int, data_dir: Path, epochs: int, bs: int, root: Path) -> list[float]:
    """Steps/s of epochs 2.. of one run in ``processes`` x ``devices``."""
    workdir = root / f"run-{processes}x{devices}"
    shutil.rmtree(workdir, ignore_errors=True)
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    procs = []
    for i in range(processes):
        extra = (["--multihost", "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
                  "--process-id", str(i)] if processes > 1 else [])
        procs.append(subprocess.Popen(train_command(workdir, data_dir, epochs, bs) + extra, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    try:
        errors = [p.communicate(timeout=1800)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"{processes}x{devices} failed:\n{err[-2000:]}")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [row["images_per_s"] / bs for row in rows if row["epoch"] >= 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="where `ttlx prepare digits` put digits")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"command": " ".join(sys.argv), "load_before": os.getloadavg(), "started": time.strftime("%FT%T%z")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternated, so that a change of load hits both
            for processes, devices in ((2, 1), (1, 2)):
                key = f"{processes}x{devices}"
                result.setdefault(key, []).extend(run_layout(processes, devices, args.data_dir, args.epochs,
                                                             args.bs, Path(tmp)))
    for key in ("2x1", "1x2"):
        result[f"{key}_median_steps_per_s"] = statistics.median(result[key])
    result["ratio_2x1_over_1x2"] = result["2x1_median_steps_per_s"] / result["1x2_median_steps_per_s"]
    result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
