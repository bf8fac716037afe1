"""A failed checkpoint save names its cause: a full disk, no permission, processes that lost contact, any
other failed write (ttlx.runs.save_errors)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from ttlx.runs.save_errors import coordination_failure, save_error

DIRECTORY = Path("/runs/r/checkpoints/latest")


def raised_from(err: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise err
        except BaseException as inner:
            raise outer from inner
    except BaseException as caught:
        return caught


class JaxRuntimeError(RuntimeError):  # stands for jax.errors.JaxRuntimeError (matched by name)
    pass


def test_a_full_disk_says_free_some_space():
    err = raised_from(OSError(errno.ENOSPC, "No space left on device"), RuntimeError("commit failed"))
    assert str(save_error(err, DIRECTORY, 3, 2)) == (
        f"Saving the checkpoint of epoch 3 to {DIRECTORY} failed (the disk is full); the checkpoint of epoch 2 "
        "is kept: free some space and re-run the same command to resume.")


def test_no_permission_names_the_path_and_says_make_it_writable():
    err = raised_from(PermissionError(errno.EACCES, "Permission denied", "/runs/r/checkpoints/latest/3.tmp"),
                      RuntimeError("write failed"))
    assert str(save_error(err, DIRECTORY, 3, None)) == (
        f"Saving the checkpoint of epoch 3 to {DIRECTORY} failed (permission denied: "
        "/runs/r/checkpoints/latest/3.tmp); no earlier checkpoint exists: make "
        f"{DIRECTORY} writable for this user and re-run the same command to resume.")


@pytest.mark.parametrize("err", [
    raised_from(JaxRuntimeError("FAILED_PRECONDITION: Barrier ttlx_latest_async_commit_complete.4 is already "
                                "ongoing."), TimeoutError("Timed out while waiting for async_commit_complete "
                                                          "barrier.")),
    JaxRuntimeError("UNAVAILABLE: Task 1 heartbeat timeout."),
])
def test_processes_that_lost_contact_say_check_every_process(err):
    assert coordination_failure(err)
    message = str(save_error(err, DIRECTORY, 4, 3))
    assert message.startswith(f"Saving the checkpoint of epoch 4 to {DIRECTORY} failed because the processes of "
                              "this run lost contact with each other (")
    assert message.endswith("); the checkpoint of epoch 3 is kept: check that every process is still running, "
                            "then re-run the same commands on every host to resume.")


def test_any_other_failed_write_names_the_error():
    err = ValueError("bad array")
    assert not coordination_failure(err)
    assert str(save_error(err, DIRECTORY, 1, None)) == (
        f"Saving the checkpoint of epoch 1 to {DIRECTORY} failed (ValueError: bad array); no earlier checkpoint "
        f"exists: check that {DIRECTORY} can be written and re-run the same command to resume.")
