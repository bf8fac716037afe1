"""``ttlx models`` and ``ttlx plugins``: what is registered."""

from __future__ import annotations

from typing import Annotated

import typer

from ttlx.cli import options
from ttlx.cli.base import app, print_json, user_errors


@app.command()
@user_errors
def models(
    image_size: Annotated[int, typer.Option(help="Input size used for output shapes.")] = 224,
    layerwise: Annotated[bool, typer.Option(help="List every layer-wise point too.")] = False,
    window: Annotated[int | None, typer.Option(help="Slices per window of the 3D networks (default 24).")]
    = None,
    json_out: options.JsonOutput = False,
):
    """List registered architectures, their truncation points, output shapes and parameter counts."""
    from ttlx.cost.catalog import model_table
    from ttlx.report.tables import print_rows

    rows = model_table(image_size=image_size, layerwise=layerwise, window=window)
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title=f"Architectures and truncation points at {image_size} px (backbone only)")


@app.command()
@user_errors
def plugins(json_out: options.JsonOutput = False):
    """List every registered dataset and model and the package that provides it."""
    from ttlx.registry import plugin_rows
    from ttlx.report.tables import print_rows

    rows = plugin_rows()
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title="Registered plugins")
