"""``csv``: a user's own images listed in a CSV of path,label (optional group, id) under an image root."""

from __future__ import annotations

from pathlib import Path

from ttlx.data.folder import class_list
from ttlx.data.spec import Catalog, DatasetSpec, Example, bad_labels, require_manual_dir
from ttlx.data.tables import find_column, read_rows, single_csv
from ttlx.errors import DataError

PATH_COLUMNS = ("path", "image_path", "file", "filename", "file_name", "image", "img", "Path")
LABEL_COLUMNS = ("label", "class", "target", "y", "diagnosis", "finding")
GROUP_COLUMNS = ("group", "patient", "patient_id", "subject", "subject_id", "lesion_id")
ID_COLUMNS = ("id", "image_id")


class CsvList(DatasetSpec):
    name = "csv"
    aliases = ("csvlist", "table")
    description = "your own images listed in a CSV of path,label[,group] (--manual-dir IMAGE_ROOT --csv FILE)"
    options = {"csv": None, "classes": None}
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
        names, label_of = self.label_map(table, [(n, r[label_col]) for n, r in rows], classes)
        image_root = self.image_root(root)
        examples = [
            Example(
                id=row[id_col] if id_col and row[id_col] else row[path_col],
                label=label_of(row[label_col]),
                image=image_root / row[path_col],
                group=self.group_of(row, group_col),
            )
            for _, row in rows
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


def _sorted_labels(values: set[str]) -> tuple[str, ...]:
    values.discard("")
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return tuple(sorted(values, key=int) if numeric else sorted(values))


CSV_LIST = CsvList()
