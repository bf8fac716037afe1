"""Leak-free train/val/test splits per repeat, nested training subsets, and split files on disk."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np

from ttlx.config import SPLIT_REPEATS as REPEATS
from ttlx.config import SPLITS
from ttlx.errors import DataError

_FOLDS = 5  # one fold of five is the 20% test set; one fold of five of the rest is the 16% val set
_SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}


def repeat_seed(seed: int, exp: int, purpose: int = 0) -> int:
    """A 32-bit seed for one repeat (and purpose) derived from the recorded dataset seed."""
    return int(np.random.SeedSequence([seed, exp, purpose]).generate_state(1)[0])


def random_split(strata: np.ndarray, groups: np.ndarray, *, seed: int, exp: int) -> np.ndarray:
    """'train'/'val'/'test' per example: stratified 64/16/20, every group inside one split."""
    assignment = np.full(len(strata), "train", dtype=object)
    test = _one_fold(strata, groups, repeat_seed(seed, exp, 0))
    assignment[test] = "test"
    rest = np.flatnonzero(assignment == "train")
    val = rest[_one_fold(strata[rest], groups[rest], repeat_seed(seed, exp, 1))]
    assignment[val] = "val"
    return assignment


def _one_fold(strata: np.ndarray, groups: np.ndarray, random_state: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

    if len(np.unique(groups)) < _FOLDS:
        raise DataError(
            f"A split needs at least {_FOLDS} distinct groups (lesions, patients or images) per part; "
            "add images or import splits with --splits-from."
        )
    strata = _pool_rare(strata)
    folds = StratifiedGroupKFold(n_splits=_FOLDS, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():  # rare classes smaller than the fold count are expected
        warnings.simplefilter("ignore", UserWarning)
        _, held_out = next(folds.split(np.zeros(len(strata)), strata, groups))
    return held_out


def _pool_rare(strata: np.ndarray) -> np.ndarray:
    """Strata with fewer members than folds share one stratum; sklearn needs one that fills every fold."""
    values, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    return np.where(counts[inverse] < _FOLDS, values.min() - 1, strata)


def subset(strata: np.ndarray, pct: int, *, seed: int, exp: int, split: str) -> np.ndarray:
    """Positions (sorted) of a stratified pct% subset; a smaller pct is always inside a larger one."""
    if not 0 < pct <= 100:
        raise DataError(f"--sub must be a percentage in 1..100, got {pct}.")
    if pct == 100:
        return np.arange(len(strata))
    rng = np.random.default_rng(repeat_seed(seed, exp, 10 + _SPLIT_CODE[split]))
    keep = []
    for stratum in np.unique(strata):  # sorted, so the draws do not depend on example order
        members = np.flatnonzero(strata == stratum)
        ranked = members[rng.permutation(len(members))]
        keep.append(ranked[: max(1, round(len(members) * pct / 100))])
    return np.sort(np.concatenate(keep))


def leaking_groups(assignment: np.ndarray, groups: np.ndarray) -> list[str]:
    """Groups that appear in more than one split (empty for a valid split)."""
    seen: dict[str, str] = {}
    leaks = set()
    for group, split in zip(groups, assignment, strict=True):
        if seen.setdefault(group, split) != split:
            leaks.add(group)
    return sorted(leaks)


def write_split(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)


def read_ids(path: Path, id_columns: tuple[str, ...] = ("id",)) -> list[str]:
    """The ids listed in a split file, from the first of ``id_columns`` it has."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        column = next((c for c in (*id_columns, "id") if c in (reader.fieldnames or [])), None)
        if column is None:
            raise DataError(f"{path} has none of the id columns {', '.join(id_columns)}; add one.")
        return [row[column] for row in reader]


def split_file(root: Path, exp: int, split: str, sub: int = 100) -> Path:
    """Where a split (or an imported subset file) lives under a prepared dataset."""
    name = f"{split}.csv" if sub == 100 else f"{split}_sub{sub}.csv"
    return root / "splits" / f"exp{exp}" / name


def imported_layout(source: Path) -> dict[int, Path]:
    """Repeat folders of a reference-layout split dir: ``<k>/`` or ``exp<k>/`` holding the three CSVs."""
    found = {}
    for exp in REPEATS:
        for name in (str(exp), f"exp{exp}"):
            folder = source / name
            if all((folder / f"{s}.csv").is_file() for s in SPLITS):
                found[exp] = folder
                break
    if not found:
        raise DataError(
            f"{source} holds no split files; expected {source}/1/train.csv, val.csv and test.csv (also exp1/ ...)."
        )
    return found


def imported_subsets(folder: Path) -> dict[tuple[str, int], Path]:
    """The reference code's subset files (``train_0.1.csv``) in one repeat folder, by (split, pct)."""
    found = {}
    for path in folder.glob("*_*.csv"):
        match = re.fullmatch(r"(train|val)_(0?\.\d+|1\.0)\.csv", path.name)
        if match:
            found[(match[1], round(float(match[2]) * 100))] = path
    return found
