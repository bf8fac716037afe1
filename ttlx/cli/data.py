"""``ttlx prepare``: build a dataset once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttlx.cli.base import app, user_errors


@app.command()
@user_errors
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset name (see `ttlx plugins`), e.g. digits, HAM10000.")],
    manual_dir: Annotated[Path | None, typer.Option(help="Folder holding the downloaded files.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where prepared datasets live (default: $TTLX_DATA_DIR or ./data).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random splits (recorded).")] = 0,
    splits_from: Annotated[
        Path | None, typer.Option(help="Import split files laid out as <exp>/{train,val,test}.csv.")
    ] = None,
    max_size: Annotated[
        int | None, typer.Option(help="Shorter side of stored images at most this (px); 0 keeps them.")
    ] = None,
    on_bad_image: Annotated[str, typer.Option(help="stop (list them all) or skip (record them).")] = "stop",
    force: Annotated[bool, typer.Option(help="Rebuild even if already prepared.")] = False,
    name: Annotated[
        str | None, typer.Option(help="folder/csv/volumes: store your data under this name (then --dataset NAME).")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="csv/bimcv/volumes: the CSV of paths and labels.")] = None,
    classes: Annotated[str | None, typer.Option(help="csv/folder/volumes: the class list, comma-separated.")] = None,
    uncertain: Annotated[str | None, typer.Option(help="chexpert: uncertain as ones, zeros, ignore.")] = None,
    frontal_only: Annotated[bool | None, typer.Option(help="chexpert: keep frontal views only.")] = None,
    count: Annotated[int | None, typer.Option(help="synthetic: number of images.")] = None,
    size: Annotated[int | None, typer.Option(help="synthetic: image side in pixels.")] = None,
    slices: Annotated[int | None, typer.Option(help="synthetic3d: slices per volume.")] = None,
    pe_types: Annotated[
        str | None, typer.Option(help="penet: PE types of positive studies kept (central,segmental or all).")
    ] = None,
    intensity_window: Annotated[
        str | None, typer.Option(help="volumes: LOW,HIGH voxel values scaled to [0, 1] (default: CT's -100,900 HU).")
    ] = None,
):
    """Build a dataset once (ArrayRecord + split files) and print its images per class and split."""
    from ttlx.config import check_int, check_seed

    check_seed(seed)
    if max_size is not None:
        check_int(max_size, "--max-size", 0, what="0 (keep the images' size) or a number of pixels")
    from ttlx.data.prepare import prepare_dataset
    from ttlx.data.summary import print_summary

    given = {"csv": csv, "classes": classes, "uncertain": uncertain, "frontal_only": frontal_only}
    given.update(count=count, size=size, slices=slices, pe_types=pe_types, intensity_window=intensity_window)
    root = prepare_dataset(
        dataset, data_dir, manual_dir, seed=seed, splits_from=splits_from, max_size=max_size,
        on_bad_image=on_bad_image, force=force, show_progress=True, name=name,
        **{k: v for k, v in given.items() if v is not None},
    )  # fmt: skip
    print_summary(root)
