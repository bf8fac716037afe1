"""``ttlx weights fetch|convert|list``: pretrained torchvision weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttlx.cli import options
from ttlx.cli.base import app, print_json, user_errors

weights_app = typer.Typer(help="Fetch and convert pretrained torchvision weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


ArchArgument = Annotated[str, typer.Argument(help="Architecture: resnet50, densenet201 or a plugin model.")]


@weights_app.command("fetch")
@user_errors
def weights_fetch(
    arch: ArchArgument,
    source: Annotated[str, typer.Option(help="imagenet (torchvision V1, the paper's) or imagenet-v2.")]
    = "imagenet",
    force: Annotated[bool, typer.Option(help="Download and convert again even when cached.")] = False,
):
    """Download torchvision ImageNet weights (hub copy, SHA-256 verified) and cache them converted."""
    from ttlx.models import get_architecture
    from ttlx.models.weights.pretrained import fetch

    path = fetch(get_architecture(arch), source, force=force)
    typer.echo(f"{arch} {source} weights ready in {path}; use them with --pretrained {source}.")


@weights_app.command("convert")
@user_errors
def weights_convert(
    arch: ArchArgument,
    file: Annotated[Path, typer.Argument(help="A torchvision-format .safetensors or .pth state dict.")],
    source: Annotated[str | None, typer.Option(help="Name to store it under (default: imagenet, or the "
                                                    "variant a torchvision file name identifies).")] = None,
):
    """Convert a local torchvision-format weights file into the cache (for machines without internet)."""
    from ttlx.models import get_architecture
    from ttlx.models.weights.pretrained import convert_file

    path = convert_file(get_architecture(arch), file, source)
    typer.echo(f"Converted {file} into {path}; use it with --pretrained {path.stem}.")


@weights_app.command("list")
@user_errors
def weights_list(
    json_out: options.JsonOutput = False,
):
    """List the named weights of every architecture, where they come from and whether they are cached."""
    from ttlx import registry
    from ttlx.models.architecture import Architecture
    from ttlx.models.weights.pretrained import weights_rows
    from ttlx.report.tables import print_rows

    rows = [row for entry in registry.models.entries() if isinstance(entry.obj, Architecture)
            for row in weights_rows(entry.obj)]
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title="Pretrained weights (cache: $TTLX_CACHE_DIR or ~/.cache/ttlx)")
