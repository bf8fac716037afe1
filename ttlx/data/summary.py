"""The table that ends ``ttlx prepare``: images per class and split of a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.data.split_files import split_positions
from ttlx.data.splits import SPLITS
from ttlx.data.store import load_prepared
from ttlx.data.windows import is_volumetric


def summary_rows(root: Path, exp: int = 1) -> list[dict]:
    """One row per class (per finding: positives) with counts per split of repeat ``exp``, and a total row."""
    prepared = load_prepared(root.name, root.parent)
    labels = prepared.index["labels"]
    counts = {}
    for split in SPLITS:
        chosen = labels[split_positions(prepared, exp=exp, split=split)]
        if prepared.multilabel:
            counts[split] = (chosen == 1).sum(axis=0) if len(chosen) else np.zeros(len(prepared.classes), int)
        else:
            counts[split] = np.bincount(chosen, minlength=len(prepared.classes))
    rows = []
    for i, name in enumerate(prepared.classes):
        row = {"class": name, **{s: int(counts[s][i]) for s in SPLITS}}
        rows.append({**row, "total": sum(row[s] for s in SPLITS)})
    sizes = prepared.meta["split_sizes"][f"exp{exp}"]
    unit = "studies" if is_volumetric(prepared) else "images"
    rows.append({"class": unit, **{s: sizes[s] for s in SPLITS}, "total": sum(sizes.values())})
    return rows


def print_summary(root: Path, exp: int = 1) -> None:
    from rich.console import Console
    from rich.table import Table

    prepared = load_prepared(root.name, root.parent)
    unit = "studies" if is_volumetric(prepared) else "images"
    what = f"positive {unit} per finding" if prepared.multilabel else f"{unit} per class"
    table = Table(
        title=f"{prepared.name}: {what} and split (exp{exp} of 3)",
        caption=f"splits: {prepared.meta['splits']}",
    )
    for column in ("class", *SPLITS, "total"):
        table.add_column(column, justify="left" if column == "class" else "right")
    rows = summary_rows(root, exp)
    for n, row in enumerate(rows):
        table.add_row(*(str(v) for v in row.values()), end_section=n == len(rows) - 2)
    console = Console()
    console.print(table)
    skipped = prepared.meta.get("skipped") or []
    if skipped:
        noun = "volume(s)" if unit == "studies" else "image(s)"
        console.print(f"[yellow]{len(skipped)} unreadable {noun} were skipped; see {root / 'skipped.csv'}.")
    console.print(f"Prepared in {root}")
