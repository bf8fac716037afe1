"""``bimcv``: BIMCV-COVID19 lung-cropped chest x-rays as the reference code reads them (CSV + crop/)."""

from __future__ import annotations

import re
from pathlib import Path

from ttlx.data.datasets.csvlist import LABEL_COLUMNS, CsvList
from ttlx.data.spec import bad_labels

CLASSES = ("negative", "positive")
# Spellings users have for the two labels (the reference uses 0/1).
LABEL_VALUES = {
    **dict.fromkeys(("0", "0.0", "negative", "neg", "normal", "false", "no", "covid-negative"), 0),
    **dict.fromkeys(
        ("1", "1.0", "positive", "pos", "covid", "covid19", "covid-19", "true", "yes", "covid-positive"), 1
    ),
}
SUBJECT = re.compile(r"sub-S\d+")  # BIMCV file names start with the subject: one patient, many images


class Bimcv(CsvList):
    name = "bimcv"
    aliases = ("BIMCV", "BIMCV-COVID19", "bimcv-covid19")
    description = "BIMCV-COVID19 lung-cropped chest x-rays, COVID negative/positive (split by subject)"
    channels = 1
    download = (
        "https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/ (lung-cropped PNGs under crop/ and a CSV "
        "with columns path,label)"
    )
    options = {"csv": None}
    nameable = False  # a public dataset, not the user's own CSV
    id_columns = ("path", "id", "image_id", "Path", "filename")
    label_columns = (*LABEL_COLUMNS, "covid", "covid19", "covid-19")

    def scan(self, manual_dir: Path | None, csv: str | Path | None = None):
        return super().scan(manual_dir, csv=csv)

    def image_root(self, root: Path) -> Path:
        return root / "crop" if (root / "crop").is_dir() else root

    def group_of(self, row: dict[str, str], group_col: str | None) -> str:
        if group_col:
            return row[group_col]
        match = SUBJECT.search(" ".join(row.values()))
        return match[0] if match else ""

    def label_map(self, table: Path, labels: list[tuple[int, str]], classes: str | None):
        outside = [n for n, v in labels if v.lower() not in LABEL_VALUES]
        if outside:
            raise bad_labels(self.name, table, outside, ["0/negative", "1/positive"])
        return CLASSES, lambda value: LABEL_VALUES[value.lower()]


BIMCV = Bimcv()
