"""Start N real ``ttlx`` processes that form one multi-process JAX run on 127.0.0.1, and never leave one behind.

Each process runs ``tiny_cli.py`` (the ``ttlx`` command line with the tiny test network registered) with
``--multihost --coordinator 127.0.0.1:PORT --num-processes N --process-id i`` on a fresh free port, one or two
virtual CPU devices each (``XLA_FLAGS=--xla_force_host_platform_device_count``), in its own process group, its
output in ``<logs>/p<i>.log``. :class:`Cluster` is a context manager: on exit every process group it started
(the ttlx process and any loader workers it forked) is sent SIGKILL, whatever happened in the test.

Usage::

    with Cluster(2, tmp_path / "logs") as cluster:
        cluster.start(lambda i: train_args(...))
        results = cluster.wait(timeout=120)

Also runnable as a script for stress runs by hand: ``python tests/multihost/harness.py --help``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TINY_CLI = Path(__file__).with_name("tiny_cli.py")


def free_port() -> int:
    """A TCP port nobody listens on now (the coordinator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_args(workdir: Path, data_dir: Path, *, epochs: int = 3, bs: int = 32, sub: int = 25,
               extra: tuple[str, ...] = ()) -> list[str]:
    """``ttlx train`` arguments of the tiny network on prepared digits at 32 px."""
    return ["train", "--dataset", "digits", "--data-dir", str(data_dir), "--model", "tinynet", "--trunc", "-1",
            "--pretrained", "random", "--head", "pool", "--image-size", "32", "--max-epoch", str(epochs),
            "--bs", str(bs), "--sub", str(sub), "--lr", "0.01", "--workdir", str(workdir), "--no-progress",
            *extra]


@dataclass
class Result:
    index: int
    returncode: int | None  # None: still running when the wait ended (then killed)
    log: str
    seconds: float  # from start to exit

    @property
    def last_line(self) -> str:
        lines = [line for line in self.log.splitlines() if line.strip()]
        return lines[-1] if lines else ""


class Cluster:
    """N processes of one multi-process run (or N independent ones with ``multihost=False``)."""

    def __init__(self, n: int, logs: Path, *, devices: int = 1, multihost: bool = True,
                 env: dict[str, str] | None = None, script: Path = TINY_CLI):
        self.n, self.logs, self.devices, self.multihost, self.script = n, Path(logs), devices, multihost, script
        self.env = dict(env or {})
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.started: list[float] = []
        self.ended: dict[int, float] = {}
        self.logs.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.kill_all()

    def log_path(self, i: int) -> Path:
        return self.logs / f"p{i}.log"

    def command(self, i: int, args: list[str]) -> list[str]:
        cmd = [sys.executable, str(self.script), *args]
        if self.multihost:
            cmd += ["--multihost", "--coordinator", f"127.0.0.1:{self.port}", "--num-processes", str(self.n),
                    "--process-id", str(i)]
        return cmd

    def start(self, args_of: Callable[[int], list[str]], env_of: Callable[[int], dict] | None = None) -> None:
        """Start process i with ``args_of(i)`` (ttlx arguments) and ``env_of(i)`` added to the environment."""
        for i in range(self.n):
            env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
                   "XLA_FLAGS": f"--xla_force_host_platform_device_count={self.devices}", **self.env,
                   **(env_of(i) if env_of else {})}
            with open(self.log_path(i), "w") as log:
                self.procs.append(subprocess.Popen(self.command(i, args_of(i)), stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True))
            self.started.append(time.monotonic())

    def poll(self) -> list[int | None]:
        codes = [p.poll() for p in self.procs]
        now = time.monotonic()
        for i, code in enumerate(codes):
            if code is not None and i not in self.ended:
                self.ended[i] = now
        return codes

    def wait(self, timeout: float, *, kill_rest_after_first_exit: bool = False,
             until: Callable[[], bool] | None = None) -> list[Result]:
        """Wait until every process exits (or ``until()`` is true, or ``timeout`` seconds pass); the ones
        still running then are killed and report ``returncode`` None. With ``kill_rest_after_first_exit``
        the first exit SIGKILLs the others at once (a kill -9 of every host)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = self.poll()
            if all(code is not None for code in codes) or (until is not None and until()):
                break
            if kill_rest_after_first_exit and any(code is not None for code in codes):
                self.kill_all()
                break
            time.sleep(0.05)
        running = [p.poll() is None for p in self.procs]
        self.kill_all()
        return self.results(running)

    def results(self, running: list[bool] | None = None) -> list[Result]:
        running = running or [False] * len(self.procs)
        out = []
        for i, proc in enumerate(self.procs):
            code = None if running[i] else proc.returncode
            seconds = self.ended.get(i, time.monotonic()) - self.started[i]
            out.append(Result(i, code, self.log_path(i).read_text(errors="replace"), seconds))
        return out

    def signal(self, sig: int, indices: list[int] | None = None) -> None:
        """Send ``sig`` to process i's own pid (its loader workers are left to it)."""
        for i in indices if indices is not None else range(len(self.procs)):
            if self.procs[i].poll() is None:
                os.kill(self.procs[i].pid, sig)

    def kill_all(self) -> None:
        """SIGKILL every process group this cluster started and reap them."""
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.poll()

    def log_has(self, i: int, text: str) -> bool:
        try:
            return text in self.log_path(i).read_text(errors="replace")
        except FileNotFoundError:
            return False


def main() -> None:
    """Repeat one multi-process training run under CPU load and count how many finished (stress runs)."""
    import argparse
    import shutil

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--load", type=int, default=1, help="busy-looping processes beside the run")
    parser.add_argument("--shared-barriers", action="store_true", help="the barrier names before the fix")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a try may take (then: hung)")
    args = parser.parse_args()
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    ok = 0
    try:
        for t in range(args.tries):
            work = args.out / f"try{t}"
            shutil.rmtree(work, ignore_errors=True)
            env = {"TINY_CLI_SHARED_BARRIERS": "1"} if args.shared_barriers else {}
            with Cluster(args.processes, work / "logs", env=env) as cluster:
                cluster.start(lambda i: train_args(work / "run", args.data_dir, epochs=args.epochs))  # noqa: B023
                results = cluster.wait(args.timeout)
            good = all(r.returncode == 0 for r in results) and (work / "run" / "status.json").is_file()
            ok += good
            barrier = any("is already ongoing" in r.log for r in results)
            print(f"try {t}: {'ok' if good else 'FAILED'} {[r.returncode for r in results]} "
                  f"{'barrier collision ' if barrier else ''}"
                  f"{max(r.seconds for r in results):.0f} s" + ("" if good else f" {results[0].last_line}"),
                  flush=True)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    print(f"{ok}/{args.tries} finished")


if __name__ == "__main__":
    main()
