"""Writing the split files of a new dataset (random, official or imported) and reading them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.data import splits
from ttlx.data.spec import DatasetSpec, Example
from ttlx.data.store import Prepared
from ttlx.errors import DataError

_OFFICIAL = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def write_all_splits(
    root: Path,
    spec: DatasetSpec,
    classes: tuple[str, ...],
    examples: list[Example],
    labels: np.ndarray,
    strata: np.ndarray,
    settings: dict,
) -> dict:
    """Write ``splits/exp<k>/{train,val,test}.csv`` for every repeat; return what the marker records."""
    groups = np.asarray([e.group_key for e in examples], dtype=object)
    source = settings["splits_from"]
    leaks = 0
    if source:
        assignments, subsets = _imported(Path(source), spec, examples)
        kind = f"imported from {source}"
    elif spec.official_splits:
        official = _official(examples)
        assignments, subsets, kind = {k: official for k in splits.REPEATS}, {}, "official"
    else:
        assignments = {k: splits.random_split(strata, groups, seed=settings["seed"], exp=k) for k in splits.REPEATS}
        subsets, kind = {}, "random, stratified, grouped, 64/16/20"
    sizes = {}
    for exp, assignment in assignments.items():
        leaks = max(leaks, len(splits.leaking_groups(assignment[assignment != ""], groups[assignment != ""])))
        sizes[f"exp{exp}"] = {}
        for split in splits.SPLITS:
            members = np.flatnonzero(assignment == split)
            rows = [_row(examples[i], labels[i], classes, spec.multilabel) for i in members]
            splits.write_split(splits.split_file(root, exp, split), rows)
            sizes[f"exp{exp}"][split] = len(rows)
    for (exp, split, pct), members in subsets.items():
        rows = [_row(examples[i], labels[i], classes, spec.multilabel) for i in members]
        splits.write_split(splits.split_file(root, exp, split, pct), rows)
    return {"splits": kind, "split_sizes": sizes, "leaking_groups": leaks}


def _row(example: Example, label, classes: tuple[str, ...], multilabel: bool) -> dict:
    if not multilabel:
        return {"id": example.id, "label": classes[int(label)], "group": example.group_key}
    positives = "|".join(c for c, v in zip(classes, label, strict=True) if v == 1)
    return {
        "id": example.id,
        "label": positives,
        "group": example.group_key,
        **dict(zip(classes, map(int, label), strict=True)),
    }


def _official(examples: list[Example]) -> np.ndarray:
    names = [_OFFICIAL.get(e.split.lower(), "") for e in examples]
    if "" in names:
        raise DataError("Every example of a dataset with official splits needs a split (train, val or test).")
    return np.asarray(names, dtype=object)


def _imported(source: Path, spec: DatasetSpec, examples: list[Example]):
    """Assignments per repeat ('' for examples a repeat does not list) and the subsets it ships."""
    position = {e.id: i for i, e in enumerate(examples)}
    assignments, subsets = {}, {}
    for exp, folder in splits.imported_layout(source).items():
        assignment = np.full(len(examples), "", dtype=object)
        for split in splits.SPLITS:
            members = _members(folder / f"{split}.csv", spec, position)
            taken = members[assignment[members] != ""]
            if len(taken):
                raise DataError(
                    f"{folder} lists {examples[taken[0]].id} in {split}.csv and {assignment[taken[0]]}.csv; "
                    "an image can be in one split only."
                )
            assignment[members] = split
        for (split, pct), path in splits.imported_subsets(folder).items():
            subsets[(exp, split, pct)] = _members(path, spec, position)
        assignments[exp] = assignment
    return assignments, subsets


def _members(path: Path, spec: DatasetSpec, position: dict[str, int]) -> np.ndarray:
    ids = [i.strip() for i in splits.read_ids(path, spec.id_columns)]
    unknown = [i for i in ids if i not in position]
    if unknown:
        raise DataError(
            f"{path} lists {len(unknown)} images the dataset does not have (first: {unknown[0]}); "
            "check that the split files belong to this dataset."
        )
    return np.asarray([position[i] for i in ids], dtype=np.int64)


def split_positions(prepared: Prepared, *, exp: int, split: str, sub: int = 100) -> np.ndarray:
    """Record positions of one split of one repeat, restricted to the nested --sub subset for train/val."""
    if exp not in splits.REPEATS:
        raise DataError(f"--exp must be one of {', '.join(map(str, splits.REPEATS))}, got {exp}.")
    if split not in splits.SPLITS:
        raise DataError(f"The split must be one of {', '.join(splits.SPLITS)}, got '{split}'.")
    shipped = splits.split_file(prepared.root, exp, split, sub)
    if sub != 100 and split != "test" and shipped.is_file():
        return prepared.positions(splits.read_ids(shipped), str(shipped))
    path = splits.split_file(prepared.root, exp, split)
    positions = prepared.positions(splits.read_ids(path), str(path))
    if sub == 100 or split == "test":
        return positions
    chosen = splits.subset(prepared.index["strata"][positions], sub, seed=prepared.seed, exp=exp, split=split)
    return positions[chosen]
