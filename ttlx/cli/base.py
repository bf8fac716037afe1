"""What every ``ttlx`` command shares: the Typer app, one-sentence errors, process settings, JSON output.

Nothing heavy is imported at module level (no JAX, no plugins) so ``ttlx --help`` stays instant; each
command imports what it needs inside its body. Errors a user can cause (``ttlx.errors.UserError`` and
unknown registry names) exit with code 2 and one sentence.
"""

from __future__ import annotations

import functools
import json
import sys

import typer
from typer.core import TyperGroup

# click's UsageError (wrong option types, unknown options, missing arguments); typer re-exports only its
# BadParameter subclass, under click or its own vendored copy
UsageError = typer.BadParameter.__mro__[1]


def usage_sentence(err) -> str:
    """A usage error as one line ending like a sentence: ``Invalid value for '--lr': ... number.``"""
    text = " ".join(err.format_message().split())
    return text if text.endswith((".", "?", "!")) else text + "."


class OneSentenceErrors(TyperGroup):
    """Usage errors print one sentence and exit with code 2, like every other error a user can cause,
    instead of click's usage block (a command's ``--help`` shows the usage)."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":
                raise
            fail(usage_sentence(err))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as err:  # raised while a subcommand parses its options
            if type(err).__name__ == "NoArgsIsHelpError":
                raise
            fail(usage_sentence(err))


app = typer.Typer(
    cls=OneSentenceErrors,
    help="Truncated transfer learning for medical image classification, in JAX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str) -> None:
    """Print one sentence to stderr and exit with code 2."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def user_errors(fn):
    """Turn the errors a user can cause into one sentence and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ttlx.errors import UserError
        from ttlx.registry import UnknownNameError

        try:
            return fn(*args, **kwargs)
        except (UserError, UnknownNameError) as err:
            fail(str(err))
        except FileNotFoundError as err:
            fail(f"{err.strerror or 'not found'}: {err.filename}; check the path.")

    return wrapper


def compiling_command() -> None:
    """Process settings for a command that compiles: compilation cache, allocator, XLA:CPU flags.

    Runs before JAX starts its backends (see ``ttlx.runtime.process``); none of it changes results.
    """
    from ttlx.runtime.process import configure_process

    configure_process()


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
