"""Errors a user can cause; the CLI turns each into one sentence and exit code 2."""

import errno


class UserError(ValueError):
    """A problem with the user's input (an option, a file, a name); the message says what to do."""


class ConfigError(UserError):
    """An option or combination of options that cannot work."""


class WeightsError(UserError):
    """A weights file or source that cannot be used for the requested model."""


class DataError(UserError):
    """A dataset that is missing, incomplete or holds bad files."""


class WriteError(UserError):
    """A file of a run could not be written (most often: the disk is full); what was written stays."""


def disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it was raised from says the disk (or quota) is full."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def write_failure_cause(err: BaseException) -> str:
    """'the disk is full', or the error's type and text."""
    return "the disk is full" if disk_full(err) else f"{type(err).__name__}: {err}"
