"""The run dir of one training run: its name, ``config.json``, ``metrics.jsonl`` and ``status.json``.

A run dir holds ``config.json`` (the resolved config, versions, git commit), ``metrics.jsonl`` (one JSON
object per finished epoch), ``checkpoints/{latest,best}`` (see ``checkpoint.py``), ``train_curves.png``,
``status.json`` once training has finished, and ``eval_<split>.json`` after ``ttlx eval``. The default
location is derived from the options, so re-running a command finds its run dir and resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ttlx import settings
from ttlx.config import ModelConfig, TrainConfig
from ttlx.errors import ConfigError, UserError, WriteError, write_failure_cause

CONFIG, METRICS, STATUS, CURVES = "config.json", "metrics.jsonl", "status.json", "train_curves.png"

# Options that shape a run's name when they differ from the default (dataset, exp, sub, model and trunc
# are always in it); what is absent here cannot change the results or is checked on resume instead.
NAME_PARTS = {
    "pretrained": lambda v: Path(v).name if os.sep in v or Path(v).exists() else v,
    "head": lambda v: v or "nohead",
    "image_size": lambda v: f"{v}px",
    "freeze_until": lambda v: f"freeze{v}",
    "ptl_decay": lambda v: f"ptl{v:g}",
    "slim_from": lambda v: f"slim{v}",
    "slim_factor": lambda v: f"x{v}",
    "dtype": lambda v: "bf16" if v == "bfloat16" else v,
    "batch_size": lambda v: f"bs{v}",
    "lr": lambda v: f"lr{v:g}",
    "weight_decay": lambda v: f"wd{v:g}",
    "max_epoch": lambda v: f"ep{v}",
    "plateau_factor": lambda v: f"pf{v:g}",
    "plateau_patience": lambda v: f"pp{v}",
    "plateau_threshold": lambda v: f"pt{v:g}",
    "min_lr": lambda v: f"minlr{v:g}",
    "class_weighted": lambda v: "unweighted",
    "seed": lambda v: f"seed{v}",
    "recipe": lambda v: v,
    "stochastic_depth": lambda v: "nosd",
}
# Options that do not change what is computed, so a resumed run may differ in them (batches do not depend
# on the loader's worker count).
RESUME_FREE = ("data_dir", "workdir", "max_epoch", "num_workers")


def run_name(cfg: TrainConfig, model_cfg: ModelConfig) -> str:
    """``resnet50_t3_exp1_sub100`` (``_lw11`` for layer-wise points) plus every non-default option."""
    point = f"lw{model_cfg.trunc}" if model_cfg.layerwise else f"t{model_cfg.trunc}"
    parts = [f"{model_cfg.arch}_{point}", f"exp{cfg.exp}", f"sub{cfg.sub}"]
    defaults = TrainConfig()
    for field, fmt in NAME_PARTS.items():
        value = getattr(cfg, field)
        if value != getattr(defaults, field):
            parts.append(fmt(value))
    return "_".join(parts).replace(os.sep, "-")


def default_workdir(cfg: TrainConfig, model_cfg: ModelConfig, dataset: str) -> Path:
    """``runs/<dataset>/<run name>`` under ``$TTLX_RUNS_DIR`` (default ``./runs``)."""
    root = settings.runs_dir()
    return root / dataset / run_name(cfg, model_cfg)


class RunDir:
    """Paths and small files of one run dir; with ``writer`` False (other hosts) it writes nothing."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def finished(self) -> bool:
        return (self.path / STATUS).is_file()

    def read_config(self) -> dict[str, Any]:
        if not self.exists():
            raise UserError(f"{self.path} is not a ttlx run dir (no {CONFIG}); pass a directory written by "
                            "`ttlx train`.")
        return json.loads((self.path / CONFIG).read_text())

    def write_config(self, cfg: TrainConfig, model_cfg: ModelConfig, dataset: dict[str, Any],
                     source: dict[str, Any] | None = None) -> None:
        import jax

        import ttlx

        record = {
            "train": cfg.to_dict(),
            "model": model_cfg.to_dict(),
            "dataset": dataset,
            **({"source": source} if source else {}),  # what --pretrained resolved to, its input convention
            "ttlx_version": ttlx.__version__,
            "jax_version": jax.__version__,
            "git_commit": git_commit(),
            "devices": [str(d) for d in jax.devices()],
            "command": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        created = not self.path.exists()
        try:
            with self.writing(CONFIG):
                self.path.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.path / CONFIG, record)
        except WriteError:
            if created:  # a run that never started leaves no run dir behind
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    def read_metrics(self) -> list[dict[str, Any]]:
        """The logged epochs; a last line torn by a crash or a full disk is left out (the checkpoint's
        history rewrites it on resume)."""
        path = self.path / METRICS
        if not path.is_file():
            return []
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):
                    break
                raise UserError(f"Line {number} of {path} is not JSON; the file was edited or damaged: restore "
                                "it, or re-run the training command, which rewrites it from the checkpoint.") from None
        return rows

    @contextlib.contextmanager
    def writing(self, name: str, epoch: int | None = None):
        """Turn a failed write of ``name`` (a full disk, a lost mount) into one sentence on what is kept."""
        try:
            yield
        except OSError as err:
            kept = (f"epoch {epoch} is checkpointed and earlier files are intact" if epoch is not None
                    else "earlier files are intact")
            raise WriteError(f"Writing {self.path / name} failed ({write_failure_cause(err)}); {kept}: free some "
                             "space and re-run the same command to resume.") from err

    def append_metrics(self, row: dict[str, Any]) -> None:
        if not self.writer:
            return
        with self.writing(METRICS, row.get("epoch")), open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Make ``metrics.jsonl`` hold exactly ``rows`` (after a resume drops epochs past the checkpoint)."""
        if not self.writer:
            return
        tmp = self.path / (METRICS + ".tmp")
        with self.writing(METRICS):
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, self.path / METRICS)

    def mark_finished(self, summary: dict[str, Any]) -> None:
        if not self.writer:
            return
        with self.writing(STATUS, summary.get("epochs")):
            write_json_atomic(self.path / STATUS, summary)

    def status(self) -> dict[str, Any] | None:
        return json.loads((self.path / STATUS).read_text()) if self.finished() else None


def open_run(path: Path, cfg: TrainConfig, model_cfg: ModelConfig, dataset: dict[str, Any], *,
             force: bool, source: dict[str, Any] | None = None) -> tuple[RunDir, bool]:
    """Create, resume or (with ``force``) restart the run dir; returns (run, resuming)."""
    run = RunDir(path)
    refuse_finished(run, force)
    if run.exists() and force:
        shutil.rmtree(run.path)
    elif run.exists():
        check_same_run(run, cfg, model_cfg)
        check_same_source(run, source)
        return run, True
    run.write_config(cfg, model_cfg, dataset, source)
    return run, False


def refuse_finished(run: RunDir, force: bool) -> None:
    """A finished run is not trained again unless ``force``."""
    if run.finished() and not force:
        raise UserError(f"The run in {run.path} already finished; pass --force to train it again from "
                        f"scratch, or evaluate it with `ttlx eval {run.path}`.")


def open_run_on_all_hosts(path: Path, cfg: TrainConfig, model_cfg: ModelConfig, dataset: dict[str, Any], *,
                          force: bool, source: dict[str, Any] | None = None) -> tuple[RunDir, bool]:
    """:func:`open_run` on the first process; the others wait for it and write nothing themselves."""
    import jax

    if jax.process_count() == 1:
        return open_run(path, cfg, model_cfg, dataset, force=force, source=source)
    import numpy as np
    from jax.experimental import multihost_utils

    run, resuming = (open_run(path, cfg, model_cfg, dataset, force=force, source=source)
                     if jax.process_index() == 0 else (RunDir(path, writer=False), False))
    resuming = bool(multihost_utils.broadcast_one_to_all(np.asarray(resuming)))
    return run, resuming


def check_same_source(run: RunDir, source: dict[str, Any] | None) -> None:
    """Refuse to resume a run whose --pretrained now resolves to other weights or another input convention
    (``chexpert`` after ``ttlx weights import``, where a substitute stood in before)."""
    old = run.read_config().get("source")
    if not (old and source) or (old["resolved"], old["input"]) == (source["resolved"], source["input"]):
        return
    raise UserError(f"The run in {run.path} started from {old['resolved']} (input {old['input']}), but "
                    f"--pretrained {source['name']} now means {source['resolved']} (input {source['input']}); "
                    f"start it afresh with --force, or train the new source with another --workdir.")


def check_same_run(run: RunDir, cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    """Refuse to resume a run dir that was started with other options."""
    saved = run.read_config()
    old_train = TrainConfig.from_dict(saved["train"])
    for field in dataclasses.fields(TrainConfig):
        if field.name in RESUME_FREE:
            continue
        old, new = getattr(old_train, field.name), getattr(cfg, field.name)
        if old != new:
            raise ConfigError(
                f"{run.path} holds a run started with {field.name}={old!r}, not {new!r}; re-run with the "
                "same options to resume it, pass --force to start over, or choose another --workdir."
            )
    if ModelConfig.from_dict(saved["model"]) != model_cfg:
        raise ConfigError(f"{run.path} holds a run of another model configuration; pass --force to start "
                          "over, or choose another --workdir.")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``path`` whole or not at all: a temporary file renamed over it (removed if writing fails)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a temporary file renamed over it (removed if writing fails)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def git_commit() -> str | None:
    """The commit of the ttlx source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
