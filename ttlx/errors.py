"""Errors a user can cause; the CLI turns each into one sentence and exit code 2."""


class UserError(ValueError):
    """A problem with the user's input (an option, a file, a name); the message says what to do."""


class ConfigError(UserError):
    """An option or combination of options that cannot work."""


class WeightsError(UserError):
    """A weights file or source that cannot be used for the requested model."""


class DataError(UserError):
    """A dataset that is missing, incomplete or holds bad files."""
