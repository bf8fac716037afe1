"""Options that several commands take, declared once so their names, defaults' meaning and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Dataset = Annotated[str, typer.Option(help="Dataset name (see `ttlx plugins`).")]
Model = Annotated[str, typer.Option(help="resnet50, densenet201, layerttl_resnet50 or a plugin model (`ttlx models`).")]
ImageSize = Annotated[int, typer.Option("--image-size", help="Input size in pixels.")]
LearningRate = Annotated[float, typer.Option(help="Adam learning rate.")]
DataDir = Annotated[Path | None, typer.Option(help="Data dir ($TTLX_DATA_DIR, ./data).")]
RunDataDir = Annotated[Path | None, typer.Option(help="Prepared data (default: the run's).")]
Checkpoint = Annotated[str, typer.Option(help="best (lowest validation loss) or latest.")]
Split = Annotated[str, typer.Option(help="Images from test, val or train.")]
ForwardBatch = Annotated[int, typer.Option("--bs", "--batch-size", help="Images per forward pass.")]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
