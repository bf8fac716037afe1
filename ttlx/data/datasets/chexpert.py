"""``chexpert``: CheXpert-v1.0-small chest x-rays, 14 findings, multi-label, grouped by patient."""

from __future__ import annotations

import re
from pathlib import Path

from ttlx.data.labels import UNCERTAIN_POLICIES
from ttlx.data.spec import Catalog, DatasetSpec, Example, bad_labels, require_manual_dir
from ttlx.data.tables import find_column, read_rows
from ttlx.errors import ConfigError, DataError

FINDINGS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Device",
)
FOLDER = "CheXpert-v1.0-small"
TABLES = ("train.csv", "valid.csv")
VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": 0}  # blank = not mentioned = 0
PATIENT = re.compile(r"patient\d+")


class Chexpert(DatasetSpec):
    name = "chexpert"
    aliases = ("CheXpert", "CheXpert-v1.0-small", "chexpert-small")
    description = "CheXpert-v1.0-small chest x-rays, 14 findings, multi-label (split by patient)"
    multilabel = True
    channels = 1
    pad_square = True  # as the reference reads them
    download = "https://stanfordmlgroup.github.io/competitions/chexpert/ (CheXpert-v1.0-small, unzipped)"
    id_columns = ("Path", "path", "id")
    options = {"uncertain": "ones", "frontal_only": False}

    def scan(self, manual_dir: Path | None, uncertain: str = "ones", frontal_only: bool = False) -> Catalog:
        if uncertain not in UNCERTAIN_POLICIES:
            raise ConfigError(f"--uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got '{uncertain}'.")
        folder = _chexpert_folder(self, manual_dir)
        examples = []
        for table in TABLES:
            examples += _examples(folder / table, folder, frontal_only)
        return Catalog(FINDINGS, examples)


def _chexpert_folder(spec: Chexpert, manual_dir: Path | None) -> Path:
    """The CheXpert-v1.0-small folder: the manual dir itself or its sub-folder of that name."""
    manual_dir = require_manual_dir(spec, manual_dir, [])
    folder = manual_dir / FOLDER if (manual_dir / FOLDER).is_dir() else manual_dir
    missing = [t for t in TABLES if not (folder / t).is_file()]
    if not folder.is_dir() or missing:
        what = ", ".join(missing) if folder.is_dir() else f"{FOLDER}/"
        raise DataError(
            f"The manual dir {manual_dir} is incomplete for 'chexpert': missing {what}. "
            f"Download it from {spec.download}"
        )
    return folder


def _examples(table: Path, folder: Path, frontal_only: bool) -> list[Example]:
    columns, rows = read_rows(table)
    path_col = find_column(columns, ("Path",), table, "Path")
    view_col = find_column(columns, ("Frontal/Lateral",), table, "Frontal/Lateral", required=False)
    absent = [f for f in FINDINGS if f not in columns]
    if absent:
        raise DataError(f"{table} lacks the finding columns {', '.join(absent)}; use the original CheXpert CSV.")
    outside = [n for n, row in rows if any(row[f] not in VALUES for f in FINDINGS)]
    if outside:
        raise bad_labels("chexpert", table, outside, ["1", "0", "-1", "blank"])
    if frontal_only:
        rows = [(n, row) for n, row in rows if (row[view_col] if view_col else _view(row[path_col])) == "Frontal"]
    return [
        Example(
            id=row[path_col],
            label=tuple(VALUES[row[f]] for f in FINDINGS),
            image=_image_path(folder, row[path_col]),
            group=_patient(row[path_col]),
        )
        for _, row in rows
    ]


def _image_path(folder: Path, path: str) -> Path:
    # Paths in the CSVs start with "CheXpert-v1.0-small/"; resolve them from the folder's parent.
    first, _, rest = path.partition("/")
    return folder / rest if first == FOLDER else folder / path


def _patient(path: str) -> str:
    match = PATIENT.search(path)
    return match[0] if match else ""


def _view(path: str) -> str:
    return "Frontal" if "frontal" in path.lower() else "Lateral"


CHEXPERT = Chexpert()
