"""The ``ttlx`` command: parse options, build a config, call the library.

Nothing heavy is imported at module level (no JAX, no plugins) so ``ttlx --help`` stays instant; each
command imports what it needs inside its body. Errors a user can cause (``ttlx.errors.UserError`` and
unknown registry names) exit with code 2 and one sentence.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Truncated transfer learning for medical image classification, in JAX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(help="Fetch and convert pretrained torchvision weights.", no_args_is_help=True)
analyze_app = typer.Typer(help="Measure a model: cost, SVCCA, Grad-CAM.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(analyze_app, name="analyze")


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


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


HeadOption = Annotated[str, typer.Option(help="Head: pool, flatten or none (feature map).")]


# ---------------------------------------------------------------------------------------------------
# models and plugins
# ---------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def models(
    image_size: Annotated[int, typer.Option(help="Input size used for output shapes.")] = 224,
    layerwise: Annotated[bool, typer.Option(help="List every layer-wise point too.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """List registered architectures, their truncation points, output shapes and parameter counts."""
    from ttlx.models.catalog import model_table
    from ttlx.report import print_rows

    rows = model_table(image_size=image_size, layerwise=layerwise)
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title=f"Architectures and truncation points at {image_size} px (backbone only)")


@app.command()
@user_errors
def plugins(json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False):
    """List every registered dataset and model and the package that provides it."""
    from ttlx.plugins_table import plugin_rows
    from ttlx.report import print_rows

    rows = plugin_rows()
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title="Registered plugins")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
