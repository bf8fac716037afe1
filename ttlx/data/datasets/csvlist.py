"""``csv``: a user's own images listed in a CSV of path,label (optional group, id) under an image root."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from ttlx.data.datasets.folder import class_list
from ttlx.data.spec import Catalog, DatasetSpec, Example, bad_labels, require_manual_dir
from ttlx.data.tables import find_column, read_rows, single_csv
from ttlx.errors import DataError

PATH_COLUMNS = ("path", "image_path", "file", "filename", "file_name", "image", "img", "Path")
LABEL_COLUMNS = ("label", "class", "target", "y", "diagnosis", "finding")
GROUP_COLUMNS = ("group", "patient", "patient_id", "subject", "subject_id", "lesion_id")
ID_COLUMNS = ("id", "image_id")


class CsvList(DatasetSpec):
    """Rows of path,label[,group][,id]; every problem a row can have is refused with its row numbers.

    Paths are relative to the image root and must stay inside it: ``../`` that climbs out of it and
    absolute paths elsewhere are refused before any file is opened. The check reads the text of the
    paths only, so a symbolic link inside the root that points elsewhere is followed (whoever made the
    link chose it). Blank paths, labels outside the class list, ids listed twice and one image listed
    twice are refused too; extra columns and blank rows are ignored.
    """

    name = "csv"
    aliases = ("csvlist", "table")
    description = "your own images listed in a CSV of path,label[,group] (--manual-dir IMAGE_ROOT --csv FILE)"
    options = {"csv": None, "classes": None}
    nameable = True
    id_columns = ("id", "image_id", "path")
    label_columns = LABEL_COLUMNS

    def scan(self, manual_dir: Path | None, csv: str | Path | None = None, classes: str | None = None) -> Catalog:
        root = require_manual_dir(self, manual_dir, [])
        table = Path(csv).expanduser() if csv else single_csv(root, self.name)
        if not table.is_file():
            raise DataError(f"The CSV {table} does not exist; pass the file listing the images with --csv.")
        columns, rows = read_rows(table)
        path_col = find_column(columns, PATH_COLUMNS, table, "image path")
        label_col = find_column(columns, self.label_columns, table, "label")
        group_col = find_column(columns, GROUP_COLUMNS, table, "group", required=False)
        id_col = find_column(columns, ID_COLUMNS, table, "id", required=False)
        if not rows:
            raise DataError(f"{table} lists no images; add a row of path,label per image below its header.")
        image_root = self.image_root(root)
        files = _image_files(table, image_root, [(n, r[path_col]) for n, r in rows])
        names, label_of = self.label_map(table, [(n, r[label_col]) for n, r in rows], classes)
        ids = [row[id_col] if id_col and row[id_col] else row[path_col] for _, row in rows]
        numbers = [n for n, _ in rows]
        _refuse_repeats(self.name, table, numbers, ids, "has duplicate ids", "ids must be unique")
        images = [str(f) for f in files]
        _refuse_repeats(
            self.name, table, numbers, images, "references the same image more than once", "list each image once"
        )
        examples = [
            Example(id=id_, label=label_of(row[label_col]), image=file, group=self.group_of(row, group_col))
            for id_, file, (_, row) in zip(ids, files, rows, strict=True)
        ]
        return Catalog(names, examples)

    def image_root(self, root: Path) -> Path:
        return root

    def group_of(self, row: dict[str, str], group_col: str | None) -> str:
        return row[group_col] if group_col else ""

    def label_map(self, table: Path, labels: list[tuple[int, str]], classes: str | None):
        """The class names and a function from a label value to its class index; rows outside fail."""
        names = class_list(classes) or _sorted_labels({v for _, v in labels})
        index = {name: i for i, name in enumerate(names)}
        outside = [n for n, v in labels if v not in index]
        if outside:
            raise bad_labels(self.name, table, outside, names)
        return names, index.__getitem__


def _image_files(table: Path, image_root: Path, paths: list[tuple[int, str]]) -> list[Path]:
    """Each row's image under ``image_root`` (lexically normalised); blank or escaping paths are refused."""
    blank = [str(n) for n, p in paths if not p]
    if blank:
        raise DataError(f"{table} has no image path on rows {_rows(blank)}; fill them in or remove those rows.")
    root = Path(os.path.normpath(image_root))
    files = [Path(os.path.normpath(root / p)) for _, p in paths]
    outside = [f"{n} ({p})" for (n, p), f in zip(paths, files, strict=True) if not _inside(f, root)]
    if outside:
        raise DataError(
            f"{table} lists images outside the image root {image_root} on rows {_rows(outside)}; "
            "give paths relative to that folder that stay inside it."
        )
    return files


def _inside(file: Path, root: Path) -> bool:
    return file != root and file.is_relative_to(root)


def _refuse_repeats(spec_name: str, table: Path, numbers: list[int], values: list[str], what: str, fix: str):
    """One error naming each value listed more than once, with the rows that list it."""
    rows_of = defaultdict(list)
    for number, value in zip(numbers, values, strict=True):
        rows_of[value].append(str(number))
    repeated = sorted(v for v, rows in rows_of.items() if len(rows) > 1)
    if repeated:
        where = "; ".join(f"{v} on rows {', '.join(rows_of[v])}" for v in repeated[:20])
        raise DataError(f"Dataset '{spec_name}' {what}: {', '.join(repeated[:20])}; {fix} ({table}: {where}).")


def _rows(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def _sorted_labels(values: set[str]) -> tuple[str, ...]:
    values.discard("")
    numeric = all(re.fullmatch(r"-?[0-9]+", v) for v in values)
    return tuple(sorted(values, key=int) if numeric else sorted(values))


CSV_LIST = CsvList()
