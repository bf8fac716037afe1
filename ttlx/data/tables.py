"""Reading the CSV files that datasets come with: numbered rows and columns found by their usual names."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ttlx.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(column names, [(row number as a spreadsheet shows it, row)]); the header is row 1."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
            reader = csv.DictReader(f, delimiter=delimiter)
            rows = [
                (n, {k: (v or "").strip() for k, v in row.items() if k is not None})
                for n, row in enumerate(reader, start=2)
            ]
            return [c.strip() for c in reader.fieldnames or []], rows
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text CSV file; pass the CSV listing the images.") from None


def find_column(columns: Sequence[str], candidates: Sequence[str], path: Path, what: str, required: bool = True):
    """The first column of ``columns`` matching one of ``candidates`` (case-insensitive), or None."""
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lowered:
            return lowered[name.lower()]
    if required:
        raise DataError(
            f"{path} has no {what} column; name one of its columns {' or '.join(candidates[:4])} "
            f"(it has: {', '.join(columns) or 'no header'})."
        )
    return None


def single_csv(folder: Path, dataset: str) -> Path:
    """The one CSV directly in ``folder``; ask for --csv when there are none or several."""
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        which = "no CSV file" if not found else f"{len(found)} CSV files"
        raise DataError(f"{folder} holds {which}; pass the CSV listing the images of '{dataset}' with --csv.")
    return found[0]


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
