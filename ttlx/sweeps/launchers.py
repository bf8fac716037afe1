"""Launchers that run the runs of a sweep: one after another here, or as a SLURM job array via submitit.

Jobs are Python calls of :func:`ttlx.sweeps.grid.run_one` with a config dict; no shell command is ever built
from user input. ``submitit-local`` runs the same submitit path on this machine (used by the tests).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ttlx.config import check_bootstrap, check_int
from ttlx.errors import ConfigError
from ttlx.sweeps.grid import RunSpec, run_one

Report = Callable[[RunSpec, str], None]
LAUNCHERS = ("local", "slurm", "submitit-local")
# what a SLURM partition or account name may hold: it ends up in the job script submitit writes
SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,+-]*")


def check_launcher(kind: str) -> None:
    """Raise one sentence unless ``kind`` names a launcher."""
    if kind not in LAUNCHERS:
        raise ConfigError(f"Unknown launcher '{kind}'; choose local, slurm or submitit-local.")


@dataclass(frozen=True)
class SlurmOptions:
    """What a SLURM job array needs; every run of the grid is one array task."""

    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    timeout_min: int = 24 * 60
    array_parallelism: int = 16
    account: str | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not (isinstance(value, str) and SLURM_NAME.fullmatch(value)):
                raise ConfigError(f"{flag} takes a SLURM name (letters, digits and . _ , + -), got {value!r}.")
        check_int(self.gpus_per_node, "--gpus", 0)
        check_int(self.cpus_per_task, "cpus_per_task", 1)
        check_int(self.mem_gb, "mem_gb", 1)
        check_int(self.timeout_min, "--time", 1, what="at least 1 (minutes)")
        check_int(self.array_parallelism, "--array-parallelism", 1)


def launch_local(specs: list[RunSpec], bootstrap: int, report: Report) -> list[str]:
    """Run one after another; a failed run is reported and the others go on. Returns the failures."""
    check_bootstrap(bootstrap)
    failures = []
    for spec in specs:
        try:
            run_one(spec.config.to_dict(), bootstrap)
            report(spec, "done")
        except Exception as err:  # one broken run must not stop the sweep
            failures.append(_failure(spec, err))
            report(spec, f"failed: {type(err).__name__}: {err}")
    return failures


def _failure(spec: RunSpec, err: BaseException) -> str:
    workdir = Path(spec.config.workdir)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    (workdir.parent / f"{workdir.name}.error.txt").write_text("".join(traceback.format_exception(err)))
    return f"{workdir.name}: {type(err).__name__}: {err}"


def make_executor(kind: str, folder: Path, options: SlurmOptions):
    """A submitit executor: ``slurm`` for a cluster, ``submitit-local`` for this machine."""
    import submitit

    if kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=options.timeout_min)
        return executor
    if kind != "slurm":
        raise ConfigError(f"Unknown launcher '{kind}'; choose local, slurm or submitit-local.")
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    extra = {"slurm_account": options.account} if options.account else {}
    executor.update_parameters(
        slurm_partition=options.partition, gpus_per_node=options.gpus_per_node, tasks_per_node=1,
        cpus_per_task=options.cpus_per_task, mem_gb=options.mem_gb, timeout_min=options.timeout_min,
        slurm_array_parallelism=options.array_parallelism, name="ttlx-sweep", **extra)
    return executor


def launch_submitit(specs: list[RunSpec], bootstrap: int, report: Report, *, kind: str, folder: Path,
                    options: SlurmOptions, wait: bool = True) -> list[str]:
    """Submit every run as one job (a job array on SLURM); with ``wait``, collect failures."""
    check_bootstrap(bootstrap)
    executor = make_executor(kind, folder, options)
    configs = [spec.config.to_dict() for spec in specs]
    jobs = executor.map_array(run_one, configs, [bootstrap] * len(configs))
    if not wait:
        for spec, job in zip(specs, jobs):
            report(spec, f"submitted as job {job.job_id}")
        return []
    failures = []
    for spec, job in zip(specs, jobs):
        try:
            job.result()
            report(spec, "done")
        except Exception as err:  # submitit re-raises the job's error here
            failures.append(_failure(spec, err))
            report(spec, f"failed: {type(err).__name__}: {err}")
    return failures
