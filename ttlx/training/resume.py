"""Where a run stands after each epoch (the latest checkpoint's state, schedule, history and data position),
and how an interrupted run takes it up again."""

from __future__ import annotations

import math

from ttlx.runs import checkpoint as ckpt
from ttlx.runs import state_arrays
from ttlx.runs.run_dir import RunDir
from ttlx.training.progress import TrainProgress
from ttlx.training.schedule import PlateauTracker
from ttlx.training.stopping import resume_partial

KEEP_LATEST = 2  # latest steps kept on disk: a damaged newest step falls back to the one before


def latest_step(session, iterator, data_state=None) -> tuple[dict, dict]:
    """(arrays, meta) of this epoch's resumable state; marks it kept, with at most :data:`KEEP_LATEST` latest
    steps (each with the best step its history points at: the rest are pruned once it is written).
    ``data_state``: the loader's state to record instead of ``iterator``'s (a stop in an epoch)."""
    if data_state is None:
        data_state = iterator.get_state()
        session.kept[session.epoch] = session.best_epoch
    session.kept = dict(sorted(session.kept.items())[-KEEP_LATEST:])
    meta = {
        "epoch": session.epoch,
        "plateau": session.plateau.state_dict(),
        "history": session.history,
        "best_epoch": session.best_epoch,
        "best_val_loss": None if math.isinf(session.best_val_loss) else session.best_val_loss,
        "data_iterator": ckpt.encode_json(data_state),
        "kept": [[epoch, best] for epoch, best in session.kept.items()],
    }
    return state_arrays.flatten(session.state), meta


def resume(session, checkpoints: ckpt.RunCheckpoints, run: RunDir, iterator,
           display: TrainProgress) -> None:
    """Continue from the newest intact latest checkpoint: state, schedule, history and data position.

    A step that cannot be read (files deleted or corrupted) is reported, removed, and the step before it
    is used; the epochs after it are trained again, which gives the same result on CPU.
    """
    steps = checkpoints.steps(ckpt.LATEST)
    if not steps:
        logged = run.read_metrics()
        if logged:  # never discard the record of epochs that no checkpoint can bring back
            raise ckpt.DamagedCheckpointError(
                f"{run.path} logs {len(logged)} epochs but holds no latest checkpoint to resume from; pass "
                "--force to start the run over, or choose another --workdir to keep this one.")
        checkpoints.keep_only(ckpt.BEST, set())  # interrupted before the first epoch ended
        return
    template = state_arrays.flatten(session.state)
    for epoch in reversed(steps):
        try:
            arrays, meta = checkpoints.restore(ckpt.LATEST, template=template, epoch=epoch)
            break
        except Exception as err:  # orbax's errors for missing or corrupt files vary
            older = [s for s in steps if s < epoch]
            display.note(f"Warning: the latest checkpoint of epoch {epoch} in {checkpoints.directory} is damaged "
                         f"({type(err).__name__}); " + (f"resuming from epoch {older[-1]} instead."
                                                         if older else "no older checkpoint is left."))
            if not older:
                raise ckpt.DamagedCheckpointError(
                    f"No intact latest checkpoint is left in {checkpoints.directory} (epoch {epoch}: "
                    f"{type(err).__name__}: {err}); pass --force to start the run over.") from err
            checkpoints.delete(ckpt.LATEST, epoch)
    session.state = state_arrays.unflatten_like(session.state, arrays)
    session.plateau = PlateauTracker.from_state_dict(meta["plateau"])
    session.history = list(meta["history"])
    session.best_epoch = meta["best_epoch"]
    session.best_val_loss = math.inf if meta["best_val_loss"] is None else meta["best_val_loss"]
    newest = meta["partial"]["epoch"] if meta.get("partial") else meta["epoch"]  # a stopped epoch's step
    session.kept = {int(e): b for e, b in meta.get("kept", [[meta["epoch"], meta["best_epoch"]]])
                    if int(e) <= newest}
    iterator.set_state(ckpt.decode_json(meta["data_iterator"]))
    resume_partial(session, meta, iterator)
    checkpoints.keep_only(ckpt.LATEST, set(session.kept))  # drop steps newer than this history
    checkpoints.keep_only(ckpt.BEST, set(session.kept.values()))
    run.rewrite_metrics(session.history)
    partial = meta.get("partial")
    display.note(f"Resuming {run.path} after epoch {meta['epoch']}." if not partial else
                 f"Resuming {run.path} after step {partial['step']} of epoch {partial['epoch']}.")
