"""Launchers that run the runs of a sweep: one after another here, or as a SLURM job array via submitit.

Jobs are Python calls of :func:`ttlx.sweeps.grid.run_one` with a config dict; no shell command is ever built
from user input. ``submitit-local`` runs the same submitit path on this machine (used by the tests).
With ``--nodes N`` (SLURM) each run of the grid is one job of N tasks, one per node, each using its node's
``--gpus`` GPUs: every task calls :func:`run_one_on_nodes`, where ``jax.distributed.initialize()`` reads the
coordinator, process count and index from SLURM's variables, and the N processes train the run together.
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
    nodes: int = 1  # nodes per run: one task (process) on each, training the run together

    def __post_init__(self) -> None:
        for flag, value in (("--partition", self.partition), ("--account", self.account)):
            if value is not None and not (isinstance(value, str) and SLURM_NAME.fullmatch(value)):
                raise ConfigError(f"{flag} takes a SLURM name (letters, digits and . _ , + -), got {value!r}.")
        check_int(self.gpus_per_node, "--gpus", 0)
        check_int(self.cpus_per_task, "cpus_per_task", 1)
        check_int(self.mem_gb, "mem_gb", 1)
        check_int(self.timeout_min, "--time", 1, what="at least 1 (minutes)")
        check_int(self.array_parallelism, "--array-parallelism", 1)
        check_int(self.nodes, "--nodes", 1)


def check_nodes(kind: str, options: SlurmOptions) -> None:
    """Several nodes per run need SLURM (its variables tell each process its place)."""
    if options.nodes > 1 and kind != "slurm":
        raise ConfigError(f"--nodes {options.nodes} runs each run on several SLURM nodes and needs --launcher "
                          "slurm; on one machine, start `ttlx train --multihost` processes yourself.")


def run_one_on_nodes(config: dict, bootstrap: int) -> dict:
    """:func:`ttlx.sweeps.grid.run_one` as one task of a multi-node SLURM job (every task calls it)."""
    from ttlx.training.multihost import ending_promptly, initialize

    initialize(None, None, None)  # SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID
    with ending_promptly():
        return run_one(config, bootstrap)


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
    executor.update_parameters(**slurm_parameters(options))
    return executor


def slurm_parameters(options: SlurmOptions) -> dict:
    """submitit's parameters of one run's job: ``nodes`` tasks, one per node, each with the node's GPUs."""
    extra = {"slurm_account": options.account} if options.account else {}
    return dict(slurm_partition=options.partition, nodes=options.nodes, tasks_per_node=1,
                gpus_per_node=options.gpus_per_node, cpus_per_task=options.cpus_per_task, mem_gb=options.mem_gb,
                timeout_min=options.timeout_min, slurm_array_parallelism=options.array_parallelism,
                name="ttlx-sweep", **extra)


def launch_submitit(specs: list[RunSpec], bootstrap: int, report: Report, *, kind: str, folder: Path,
                    options: SlurmOptions, wait: bool = True) -> list[str]:
    """Submit every run as one job (a job array on SLURM); with ``wait``, collect failures."""
    check_bootstrap(bootstrap)
    executor = make_executor(kind, folder, options)
    configs = [spec.config.to_dict() for spec in specs]
    task = run_one_on_nodes if options.nodes > 1 else run_one
    jobs = executor.map_array(task, configs, [bootstrap] * len(configs))
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
