"""Real multi-process runs on 127.0.0.1 (``harness.Cluster``): the tiny network on digits at 32 px, 25% of the
training split (8 global batches of 32 per epoch), one virtual CPU device per process, gloo collectives.

Each test starts real ``ttlx train --multihost`` processes; every process group is killed when its test ends.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from harness import TINY_CLI, Cluster, train_args

from ttlx.runs.checkpoint import load_model_state
from ttlx.runs.run_dir import RunDir
from ttlx.training.loop import TIMING_COLUMNS

EPOCHS = 3
SLOW = {"TINY_CLI_STEP_SLEEP": "0.25"}  # train steps after epoch 1 take 0.25 s longer: a signal lands in one
pytestmark = pytest.mark.slow  # every case starts processes that import JAX and train (10 s and more)


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in RunDir(run_dir).read_metrics()]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same metrics, and bit-identical best and latest model states."""
    assert rows(run_dir) == rows(reference)
    for which in ("best", "latest"):
        got, want = load_model_state(run_dir, which), load_model_state(reference, which)
        assert got[0] == want[0], which
        for key, value in want[1].items():
            np.testing.assert_array_equal(got[1][key], value, err_msg=f"{which}: {key}")


def train_two(workdir: Path, data_dir: Path, logs: Path, *, epochs: int = EPOCHS, extra=(), env_of=None,
              timeout: float = 180, **wait):
    with Cluster(2, logs) as cluster:
        cluster.start(lambda i: train_args(workdir, data_dir, epochs=epochs, extra=extra), env_of)
        return cluster.wait(timeout, **wait)


def ok(results) -> None:
    for r in results:
        assert r.returncode == 0, f"process {r.index} exited {r.returncode}:\n{r.log[-3000:]}"


def tiny_cli(*args: str, devices: int = 1, timeout: float = 180) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.run([sys.executable, str(TINY_CLI), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def two_process_run(digits_dir, tmp_path_factory):
    """An uninterrupted two-process run with a multi-host evaluation of the test split (``--test``)."""
    root = tmp_path_factory.mktemp("two")
    ok(train_two(root / "run", digits_dir, root / "logs", extra=("--test", "--bootstrap", "0")))
    return root / "run"


@pytest.fixture(scope="module")
def one_process_run(digits_dir, tmp_path_factory):
    """The same run in one process with two virtual devices: the same global batch of 32."""
    workdir = tmp_path_factory.mktemp("one") / "run"
    done = tiny_cli(*train_args(workdir, digits_dir, epochs=EPOCHS), devices=2)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def test_two_processes_train_checkpoint_every_epoch_and_evaluate(two_process_run, digits_dir, tmp_path):
    run = RunDir(two_process_run)
    assert run.finished() and [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]
    assert {p.name for p in two_process_run.iterdir()} >= {"config.json", "metrics.jsonl", "status.json",
                                                           "train_curves.png", "checkpoints", "eval_test.json"}
    assert sorted(p.name for p in (two_process_run / "checkpoints" / "latest").iterdir()) == ["2", "3"]
    # the multi-host evaluation (--test) wrote every test image once, in the split file's order ...
    from ttlx.data.pipeline import split_ids

    multi = (two_process_run / "predictions_test.csv").read_text().splitlines()
    ids = split_ids("digits", digits_dir, exp=1, split="test")
    assert [line.split(",")[0] for line in multi[1:]] == ids
    # ... and ttlx eval on one host gives the same file
    copy = tmp_path / "copy"
    shutil.copytree(two_process_run, copy)
    done = tiny_cli("eval", str(copy), "--split", "test", "--bootstrap", "0", "--data-dir", str(digits_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    single = (copy / "predictions_test.csv").read_text().splitlines()
    assert single[0] == multi[0] and len(single) == len(multi)
    for got, want in zip(single[1:], multi[1:], strict=True):
        got, want = got.split(","), want.split(",")
        assert got[:2] == want[:2]
        np.testing.assert_allclose(np.float64(got[2:]), np.float64(want[2:]), rtol=1e-5, atol=1e-6)


def test_kill_9_of_every_process_in_a_step_a_save_and_validation_then_the_same_commands(two_process_run,
                                                                                     digits_dir, tmp_path):
    """One run killed three times (each time every process at once), resumed each time: the same metrics and
    bit-identical weights as the uninterrupted run."""
    workdir = tmp_path / "run"
    for n, where in enumerate(["step:1:5", "save:2", "eval:3"]):
        results = train_two(workdir, digits_dir, tmp_path / f"logs{n}", env_of=lambda i, w=where: (
            {"TINY_CLI_KILL_AT": w} if i == 0 else {}), kill_rest_after_first_exit=True)
        assert results[0].returncode == -9, results[0].log[-3000:]
        assert not RunDir(workdir).finished()
    ok(train_two(workdir, digits_dir, tmp_path / "logs_last"))
    assert_same_run(workdir, two_process_run)


def test_two_processes_and_one_process_with_two_devices_give_the_identical_run(two_process_run, one_process_run):
    """Same global batches, seed and data: every device computes the same half-batch in both layouts, and the
    sums over the two halves (gradients, BatchNorm statistics, losses) add the same two numbers, by gloo across
    processes or by XLA:CPU's all-reduce within one; so the metrics and weights are bit-identical (measured:
    3 epochs, every column and every weight equal)."""
    assert_same_run(two_process_run, one_process_run)


def test_one_process_killed_the_other_stops_soon_with_one_sentence(digits_dir, tmp_path):
    with Cluster(2, tmp_path / "logs") as cluster:
        cluster.start(lambda i: train_args(tmp_path / "run", digits_dir, epochs=30))
        deadline = time.monotonic() + 120
        while not cluster.log_has(0, "epoch   1") and time.monotonic() < deadline:
            time.sleep(0.1)
        cluster.signal(signal.SIGKILL, [1])
        killed = time.monotonic()
        results = cluster.wait(60)
    survivor = results[0]
    assert survivor.returncode == 3, survivor.log[-3000:]
    assert cluster.ended[0] - killed < 10  # in practice 0.1 s: the watch socket closes with the process
    assert survivor.last_line == (
        "Error: process 1 of this 2-process run stopped without finishing (killed, or it failed: see its log), "
        "so process 0 stops too; re-run the same commands on every host to resume from the last checkpoint.")
    assert "Traceback" not in survivor.log


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm-to-every-process", "ctrl-c-on-process-0"])
def test_sigterm_or_ctrl_c_stops_every_process_after_one_step_and_the_same_commands_resume(
        ctrl_c, two_process_run, digits_dir, tmp_path):
    workdir = tmp_path / "run"
    with Cluster(2, tmp_path / "logs", env=SLOW) as cluster:
        cluster.start(lambda i: train_args(workdir, digits_dir, epochs=EPOCHS))
        deadline = time.monotonic() + 120
        while not cluster.log_has(0, "epoch   1") and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.signal(signal.SIGINT, [0]) if ctrl_c else cluster.signal(signal.SIGTERM)
        results = cluster.wait(60)
    steps = set()
    for r in results:
        by = "Ctrl-C" if ctrl_c and r.index == 0 else "SIGTERM or Ctrl-C to a process of this run"
        assert r.returncode == (130 if ctrl_c and r.index == 0 else 143), r.log[-3000:]
        assert r.last_line.startswith(f"Stopped by {by} after step ")
        assert r.last_line.endswith(f"its checkpoint saved in {workdir}; re-run the same command on every host "
                                    "to resume there.")
        steps.add(r.last_line.split(" in epoch")[0].rsplit("after step ", 1)[1])
    assert len(steps) == 1  # every process stopped after the same step
    assert max(cluster.ended.values()) - min(cluster.ended.values()) < 10
    ok(train_two(workdir, digits_dir, tmp_path / "logs2"))
    assert "Resuming" in (tmp_path / "logs2" / "p0.log").read_text()
    assert_same_run(workdir, two_process_run)


@pytest.mark.parametrize("sig,name,code", [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)])
def test_sigterm_or_ctrl_c_on_one_host_saves_the_step_and_the_same_command_resumes(sig, name, code,
                                                                                  one_process_run, digits_dir,
                                                                                  tmp_path):
    workdir = tmp_path / "run"
    with Cluster(1, tmp_path / "logs", devices=2, multihost=False, env=SLOW) as cluster:
        cluster.start(lambda i: train_args(workdir, digits_dir, epochs=EPOCHS, extra=("--num-workers", "1")))
        deadline = time.monotonic() + 120
        while not cluster.log_has(0, "epoch   1") and time.monotonic() < deadline:
            time.sleep(0.05)
        import os

        os.killpg(cluster.procs[0].pid, sig)  # a terminal's Ctrl-C reaches the loader's workers too
        result = cluster.wait(60)[0]
    assert result.returncode == code, result.log[-3000:]
    assert result.last_line.startswith(f"Stopped by {name} after step ")
    assert result.last_line.endswith("re-run the same command to resume there.")
    assert "Traceback" not in result.log and "leaked" not in result.log
    done = tiny_cli(*train_args(workdir, digits_dir, epochs=EPOCHS), devices=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(workdir, one_process_run)


def test_checkpoint_every_epoch_for_many_epochs_under_cpu_load(digits_dir, tmp_path):
    """The stress case of the orbax barrier collision ("Barrier ... is already ongoing"): 12 epochs of a small
    epoch (4 steps), best and latest saved in the background at (nearly) every epoch, beside a busy process.
    Before the barrier prefixes, 1 of 2 such runs failed by hand and the harness's baseline fails often
    (``python tests/multihost/harness.py --shared-barriers``, counts in docs/guides/reliability.md)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with Cluster(2, tmp_path / "logs") as cluster:
            cluster.start(lambda i: train_args(tmp_path / "run", digits_dir, epochs=12, sub=12))
            results = cluster.wait(240)
    finally:
        busy.kill()
        busy.wait()
    ok(results)
    assert not any("already ongoing" in r.log for r in results)
    assert [r["epoch"] for r in RunDir(tmp_path / "run").read_metrics()] == list(range(1, 13))
