"""The training loop: the paper's recipe over all devices, resumable from the latest checkpoint.

``train(cfg)`` resolves the dataset and model, opens (or resumes) the run dir, and runs epochs of jit
steps until the plateau tracker's learning rate falls below ``cfg.min_lr`` or ``cfg.max_epoch`` is
reached. After every epoch it validates, steps the plateau tracker, saves ``best`` (lowest validation
loss) and ``latest``, appends to ``metrics.jsonl`` and redraws ``train_curves.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ttlx import data as data_layer
from ttlx.config import ModelConfig, TrainConfig
from ttlx.errors import ConfigError, DataError, UserError
from ttlx.metrics import epoch_metrics, probabilities
from ttlx.models.weights.sources import source_record
from ttlx.runs import checkpoint as ckpt
from ttlx.runs.run_dir import CURVES, RunDir, default_workdir, open_run_on_all_hosts, refuse_finished
from ttlx.runtime import precompile, process
from ttlx.training import stopping
from ttlx.training.epoch_writer import EpochWriter
from ttlx.training.freeze import frozen_paths, param_labels, units_to_freeze
from ttlx.training.optim import make_optimizer, with_hyperparameter, with_learning_rate
from ttlx.training.prefetch import batches_ahead, epoch_batches
from ttlx.training.progress import TrainProgress, note_input_bound
from ttlx.training.resume import latest_step, resume
from ttlx.training.schedule import PlateauTracker
from ttlx.training.sharding import check_batch_size, data_mesh, local_batch_size, shard_batch
from ttlx.training.steps import Steps, init_state, make_steps, model_arrays, model_part, predict
from ttlx.training.volume_input import check_input_kind, loader_options, volume_record


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def resolve_model(cfg: TrainConfig, num_classes: int):
    """(architecture, ModelConfig) for a training config; training needs a classifier head."""
    from ttlx.models import resolve_config

    if cfg.head in (None, "none"):
        raise ConfigError("Training needs a classifier head; choose --head pool or --head flatten.")
    return resolve_config(cfg.model, cfg.trunc, layerwise=cfg.layerwise, head=cfg.head,
                          stochastic_depth=cfg.stochastic_depth,
                          num_classes=num_classes, image_size=cfg.image_size, slim_from=cfg.slim_from,
                          slim_factor=cfg.slim_factor, dtype=cfg.dtype, window=cfg.window)


def plan_run(cfg: TrainConfig, data):
    """(dataset info, architecture, ModelConfig, run dir) of a training config."""
    info = data.dataset_info(cfg.dataset, cfg.data_dir)
    arch, model_cfg = resolve_model(cfg, len(info.classes))
    check_input_kind(arch, info, cfg.window)  # a 3D network on images, or a 2D one on volumes: one sentence
    if cfg.freeze_until is not None:  # checked here, before any weights are read or steps compiled
        units_to_freeze(arch, model_cfg, cfg.freeze_until)
    path = Path(cfg.workdir) if cfg.workdir else default_workdir(cfg, model_cfg, info.name)
    return info, arch, model_cfg, path


def resolve_run_dir(cfg: TrainConfig, data=None) -> Path:
    """The run dir ``train(cfg)`` writes to (``--workdir`` or the default name)."""
    return plan_run(cfg, data or data_layer.data_source())[3]


@dataclass
class Session:
    """Everything one run's loop works with: steps, state, loaders and the host-side schedule."""

    cfg: TrainConfig
    mesh: Any
    steps: Steps
    state: dict
    train_loader: Any
    val_loader: Any
    num_classes: int
    multilabel: bool
    plateau: PlateauTracker
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float = math.inf
    # latest steps on disk -> the best epoch each one's history points at (both are kept)
    kept: dict[int, int | None] = field(default_factory=dict)
    prefetch: int = 0  # batches placed on the devices ahead of the step, by a thread (ttlx.training.prefetch)
    stop: stopping.StopSignals = field(default_factory=stopping.StopSignals)  # SIGTERM, Ctrl-C; a stopped epoch

    @property
    def epoch(self) -> int:
        """The last finished epoch (0 before the first)."""
        return self.history[-1]["epoch"] if self.history else 0


def build_session(cfg: TrainConfig, arch, model_cfg: ModelConfig, info, mesh, data) -> Session:
    from ttlx.models import create_model

    prefetch = batches_ahead()  # a bad setting fails before the slow build
    model = create_model(cfg.model, cfg.trunc, num_classes=model_cfg.num_classes, head=model_cfg.head,
                         pretrained=cfg.pretrained, layerwise=cfg.layerwise, image_size=cfg.image_size,
                         stochastic_depth=cfg.stochastic_depth,
                         slim_from=cfg.slim_from, slim_factor=cfg.slim_factor, dtype=cfg.dtype, seed=cfg.seed,
                         window=cfg.window)
    frozen = frozen_paths(model, arch, model_cfg, cfg.freeze_until)
    labels = param_labels(model_arrays(model)[0], frozen, arch.classifier_key)
    tx = make_optimizer(labels, lr=cfg.lr, ptl_decay=cfg.ptl_decay, weight_decay=cfg.weight_decay, recipe=cfg.recipe)
    weights = (np.asarray(data.class_weights(cfg.dataset, cfg.data_dir, exp=cfg.exp, sub=cfg.sub), np.float32)
               if cfg.class_weighted else np.ones(len(info.classes), np.float32))
    convention = source_record(arch, cfg.pretrained)["input"]  # how images become input (the source's)
    steps = make_steps(model, frozen, tx, weights, info.multilabel, mesh, convention, focal=cfg.recipe == "penet")
    loaders = [data.make_loader(cfg.dataset, cfg.data_dir, exp=cfg.exp, split=split, sub=cfg.sub,
                                batch_size=local_batch_size(cfg.batch_size), image_size=cfg.image_size,
                                train=split == "train", seed=cfg.seed, num_workers=cfg.num_workers,
                                shard_index=jax.process_index(), shard_count=jax.process_count(),
                                normalize=False,  # uint8: the steps normalise on the device
                                persistent_workers=True,  # validation: the same workers every epoch
                                **loader_options(info, cfg.window))
               for split in ("train", "val")]
    if loaders[0].steps_per_epoch < 1:
        raise DataError(f"The training split of {cfg.dataset} has {loaders[0].num_examples} images, fewer "
                        f"than one batch of {cfg.batch_size}; lower --bs.")
    plateau = PlateauTracker(cfg.lr, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                             threshold=cfg.plateau_threshold)
    state = init_state(model, tx, cfg.seed, mesh)
    if cfg.recipe == "penet":  # its warmup-cosine schedule spans the run's steps
        steps_total = cfg.max_epoch * loaders[0].steps_per_epoch
        state["opt_state"] = with_hyperparameter(state["opt_state"], "total_steps", steps_total)
    return Session(cfg, mesh, steps, state, loaders[0], loaders[1],
                   len(info.classes), info.multilabel, plateau, prefetch=prefetch)


def train(cfg: TrainConfig, *, force: bool = False, progress: bool = True, data=None) -> Path:
    """Train (or resume) the run that ``cfg`` describes and return its run dir."""
    data = data or data_layer.data_source()
    info, arch, model_cfg, path = plan_run(cfg, data)
    mesh = data_mesh()
    check_batch_size(cfg.batch_size, mesh)
    refuse_finished(RunDir(path), force)
    # a clean heap for the steps (RESULTS 2.8)
    precompile.compile_first(cfg.to_dict(), arch, target="ttlx.training.loop:compile_programs_of", verbose=progress)
    # build before touching the run dir, so bad weights or data leave no half-made run behind
    session = build_session(cfg, arch, model_cfg, info, mesh, data)
    dataset = {"name": info.name, "classes": list(info.classes), "multilabel": info.multilabel, **volume_record(info)}
    if info.stored:  # how its images were stored, so that ttlx predict treats files alike
        dataset["stored"] = info.stored
    # what --pretrained resolved to (chexpert: maybe a substitute), its input convention, notes
    source = source_record(arch, cfg.pretrained, getattr(info, "channels", None))
    run, resuming = open_run_on_all_hosts(path, cfg, model_cfg, dataset, force=force, source=source)
    checkpoints = ckpt.RunCheckpoints(run.checkpoints)
    epochs = EpochWriter(checkpoints, run)
    display = TrainProgress(cfg.max_epoch, bar=progress, quiet=jax.process_index() != 0)
    if source.get("note"):  # a substitute source is announced, never silent (also in config.json)
        display.note(source["note"])
    iterator = iter(session.train_loader)
    try:
        if resuming:
            resume(session, checkpoints, run, iterator, display)
        with display.running(), process.heap_frozen(), session.stop.installed():
            summary = fit(session, epochs, iterator, display)
    except stopping.StopRequested as stop:  # the step is done: save where it stands, then one sentence
        raise stopping.save_partial(session, epochs, stop, run.path) from None
    finally:
        epochs.close()  # an epoch still being written when training stopped on an error is completed
        iterator.close()  # the loaders' worker processes end with the run (a sweep starts the next one)
        session.val_loader.close()
    run.mark_finished(summary)
    display.note(f"Finished after epoch {summary['epochs']} ({summary['stop_reason']}); best validation loss "
                 f"{summary['best_val_loss']:.4f} at epoch {summary['best_epoch']}. Run dir: {run.path}")
    return run.path


def compile_programs_of(config: dict) -> None:
    """:func:`compile_programs` of a config dict: the target ``ttlx.runtime.precompile`` runs in its helper."""
    compile_programs(TrainConfig.from_dict(config))


def compile_programs(cfg: TrainConfig, data=None) -> None:
    """Build the run's model and steps and compile its train and evaluation steps (into the persistent
    cache, for :mod:`ttlx.runtime.precompile`); trains nothing and writes no run dir."""
    data = data or data_layer.data_source()
    info, arch, model_cfg, _ = plan_run(cfg, data)
    mesh = data_mesh()
    check_batch_size(cfg.batch_size, mesh)
    session = build_session(cfg, arch, model_cfg, info, mesh, data)
    session.steps.train.lower(session.state, shard_batch(next(iter(session.train_loader)), mesh)).compile()
    val_batch = shard_batch(next(iter(session.val_loader)), mesh)
    session.val_loader.close()
    session.steps.evaluate.lower(model_part(session.state), val_batch).compile()


def fit(session: Session, epochs: EpochWriter, iterator, display: TrainProgress) -> dict:
    """Run epochs until the learning rate falls below ``min_lr`` or ``max_epoch`` is reached; each epoch's
    checkpoints are written while the next one trains (:mod:`ttlx.training.epoch_writer`)."""
    cfg, run = session.cfg, epochs.run
    curves_drawn = (-math.inf, None)  # (time.monotonic(), epoch) of the last drawing of the curves
    while session.epoch < cfg.max_epoch and session.plateau.lr >= cfg.min_lr:
        epoch = session.epoch + 1
        lr = session.plateau.lr
        process.freeze_heap()  # what the last epoch added for good: the compiled steps' caches
        train_loss, images_per_s, input_wait = train_epoch(session, iterator, epoch, display, epochs)
        val = predict(session.steps.evaluate, model_part(session.state), session.val_loader, session.mesh, ids=False)
        check_finite(val.loss, epoch, "validation", epochs)
        probs = probabilities(val.logits, session.multilabel)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val.loss, "lr": lr,
               **epoch_metrics(val.labels, probs, session.num_classes, session.multilabel),
               "images_per_s": images_per_s, "input_wait": round(input_wait, 4)}
        note_input_bound(session.history, session.train_loader.num_workers, epoch, input_wait, display)
        next_lr = session.plateau.step(val.loss) if cfg.recipe == "paper" else lr  # penet: a per-step schedule
        session.state["opt_state"] = with_learning_rate(session.state["opt_state"], next_lr)
        session.history.append(row)
        improved = val.loss < session.best_val_loss
        best = None
        if improved:
            session.best_epoch, session.best_val_loss = epoch, val.loss
            best = (ckpt.model_state_arrays(session.state["params"], session.state["rest"]),
                    {"epoch": epoch, "val_loss": val.loss})
        stopping.drop_partial(session, epochs, epoch)  # a stopped epoch's checkpoint gives way to the full one
        latest = latest_step(session, iterator)  # updates session.kept to include this epoch
        epochs.write(row, latest, session.kept, best)
        if curves_due(curves_drawn):
            curves_drawn = draw_curves(session.history, run, epoch)
        display.epoch_done(row, improved)
    epochs.settle()
    if session.history and curves_drawn[1] != session.epoch:
        draw_curves(session.history, run, session.epoch)
    reason = ("max_epoch reached" if session.plateau.lr >= cfg.min_lr
              else f"learning rate below {cfg.min_lr:g}")
    return {"epochs": session.epoch, "best_epoch": session.best_epoch, "best_val_loss": session.best_val_loss,
            "stop_reason": reason, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# metrics.jsonl columns that depend on the machine's speed, not on the run's numbers (resumes and repeats
# agree on every other column)
TIMING_COLUMNS = ("images_per_s", "input_wait")
def train_epoch(session: Session, iterator, epoch: int, display: TrainProgress,
                epochs: EpochWriter) -> tuple[float, float, float]:
    """One epoch of train steps; returns (mean loss, images/s, share of the time spent waiting for the
    loader). Stops on a non-finite loss. The previous epoch's checkpoints are written meanwhile."""
    steps_per_epoch = session.train_loader.steps_per_epoch
    display.start_epoch(epoch, steps_per_epoch, session.plateau.lr)
    first, losses, before, waited = stopping.first_step(session, epoch)  # 1, [], 0, 0 unless resumed mid-epoch
    mark, start = iterator.get_state() if session.prefetch else None, time.perf_counter()
    batches = epoch_batches(iterator, lambda batch: shard_batch(batch, session.mesh), steps_per_epoch - first + 1,
                            session.prefetch)
    try:
        for step in range(first, steps_per_epoch + 1):
            session.state, loss = session.steps.train(session.state, next(batches))
            losses.append(loss)
            epochs.poll()
            if step > 1:  # read the previous step's loss so the host never waits on the current one
                check_finite(float(losses[-2]), epoch, step - 1, epochs)
                rate = (step - first) * session.cfg.batch_size / (time.perf_counter() - start)
                display.update(step - 1, float(losses[-2]), rate)
            if session.stop.due((epoch - 1) * steps_per_epoch + step):  # SIGTERM, Ctrl-C: every process agrees
                raise stopping.StopRequested(epoch, step, losses, before + time.perf_counter() - start,
                                             waited + batches.waited, (iterator, mark, first))
    finally:
        batches.close()
    values = np.asarray(jax.device_get(losses), dtype=np.float64)
    check_finite(float(values[-1]), epoch, steps_per_epoch, epochs)
    elapsed = before + time.perf_counter() - start
    return float(values.mean()), steps_per_epoch * session.cfg.batch_size / elapsed, (waited + batches.waited) / elapsed


def check_finite(loss: float, epoch: int, step: int | str, epochs: EpochWriter) -> None:
    if math.isfinite(loss):
        return
    epochs.settle()  # the epoch before is complete, and logged, before this one is reported
    checkpoints = epochs.checkpoints
    last = checkpoints.epoch(ckpt.LATEST)
    kept = (f"the last good checkpoint (epoch {last}) is kept" if last is not None
            else "no checkpoint was written")
    raise TrainingDiverged(
        f"The loss became {loss} at epoch {epoch}, step {step}; training stopped and {kept} in "
        f"{checkpoints.directory}. Lower --lr or check the data, then start again with --force."
    )


# train_curves.png is drawn after an epoch at most this often, and after the last one: a drawing takes
# matplotlib 0.3 s while the device waits, and a GPU epoch can take a few seconds (RESULTS section 8.5)
CURVES_EVERY_S = 30.0


def curves_due(drawn: tuple[float, int | None]) -> bool:
    return time.monotonic() - drawn[0] >= CURVES_EVERY_S


def draw_curves(history: list[dict], run: RunDir, epoch: int) -> tuple[float, int]:
    """Draw ``curves.png`` (by the writing process only); returns when and up to which epoch."""
    if run.writer:
        from ttlx.report.figures import train_curves

        with run.writing(CURVES, epoch):
            train_curves(history, run.path / CURVES)
    return time.monotonic(), epoch
