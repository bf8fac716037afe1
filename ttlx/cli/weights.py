"""``ttlx weights fetch|convert|import|list``: pretrained weights (torchvision, torchxrayvision, your own runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttlx.cli import options
from ttlx.cli.base import app, print_json, user_errors

weights_app = typer.Typer(help="Fetch, convert and import pretrained weights (source domains).",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


ArchArgument = Annotated[str, typer.Argument(help="Architecture: resnet50, densenet121, densenet201 or a plugin "
                                                   "model.")]


@weights_app.command("fetch")
@user_errors
def weights_fetch(
    arch: ArchArgument,
    source: Annotated[str, typer.Option(help="imagenet (torchvision V1, the paper's), imagenet-v2, or a chest-X-ray "
                                             "source (xrv-chex, xrv-all, xrv-res512; see `ttlx weights list`).")]
    = "imagenet",
    force: Annotated[bool, typer.Option(help="Download and convert again even when cached.")] = False,
):
    """Download pretrained weights (hub copy at a pinned revision, SHA-256 verified) and cache them converted."""
    from ttlx.models import get_architecture
    from ttlx.models.weights.pretrained import fetch
    from ttlx.models.weights.sources import CHEXPERT, chexpert_source

    if source == CHEXPERT:
        source, note = chexpert_source(get_architecture(arch))
        if note:
            typer.echo(note, err=True)
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


@weights_app.command("import")
@user_errors
def weights_import(
    name: Annotated[str, typer.Argument(help="Source name to store it under: chexpert makes it what "
                                             "--pretrained chexpert loads.")],
    run_dir: Annotated[Path, typer.Argument(help="A finished ttlx run dir trained with --trunc -1.")],
):
    """Make a trained run's backbone a named source of its architecture (the paper's CheXpert pretraining)."""
    from ttlx.models.weights.sources import import_run

    arch, path = import_run(run_dir, name)
    typer.echo(f"{arch} source {name} is now {run_dir}'s backbone ({path}); use it with --pretrained {name}.")


@weights_app.command("list")
@user_errors
def weights_list(
    json_out: options.JsonOutput = False,
):
    """List every source of every architecture: origin, training data, licence, input convention, cached."""
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
