"""Why a checkpoint could not be written, in one sentence per cause: a full disk, no permission, processes of a
multi-process run that lost contact with each other, and any other failed write."""

from __future__ import annotations

from pathlib import Path

from ttlx.errors import UserError, disk_full


class CheckpointSaveError(UserError):
    """A checkpoint could not be written: a full disk, no permission, processes that lost contact, or another
    failed write (each has its own sentence)."""


def save_error(err: Exception, directory: Path, epoch: int, previous: int | None) -> CheckpointSaveError:
    """One sentence per cause: a full disk, no permission, processes that lost contact, any other write."""
    keep = (f"the checkpoint of epoch {previous} is kept" if previous is not None
            else "no earlier checkpoint exists")
    start = f"Saving the checkpoint of epoch {epoch} to {directory} failed"
    if disk_full(err):
        return CheckpointSaveError(f"{start} (the disk is full); {keep}: free some space and re-run the same "
                                   "command to resume.")
    denied = _caused_by(err, PermissionError)
    if denied is not None:
        return CheckpointSaveError(f"{start} (permission denied: {denied.filename or directory}); {keep}: make "
                                   f"{directory} writable for this user and re-run the same command to resume.")
    if coordination_failure(err):
        return CheckpointSaveError(f"{start} because the processes of this run lost contact with each other "
                                   f"({type(err).__name__}: {err}); {keep}: check that every process is still "
                                   "running, then re-run the same commands on every host to resume.")
    return CheckpointSaveError(f"{start} ({type(err).__name__}: {err}); {keep}: check that {directory} can be "
                               "written and re-run the same command to resume.")


def _caused_by(err: BaseException | None, kind: type) -> BaseException | None:
    while err is not None:
        if isinstance(err, kind):
            return err
        err = err.__cause__ or err.__context__
    return None


# What JAX's coordination service and collectives say when a process of a multi-process run is gone or late
COORDINATION_SIGNS = ("barrier", "coordination", "heartbeat", "DEADLINE_EXCEEDED", "UNAVAILABLE", "Gloo",
                      "gloo", "Connection reset", "Connection closed", "timed out", "Timed out")


def coordination_failure(err: BaseException | None) -> bool:
    """Whether ``err`` (or an error it came from) is a failure to coordinate the processes of a run."""
    while err is not None:
        if isinstance(err, TimeoutError) or (type(err).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
                                              and any(sign in str(err) for sign in COORDINATION_SIGNS)):
            return True
        err = err.__cause__ or err.__context__
    return False
