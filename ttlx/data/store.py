"""The on-disk form of a prepared dataset: its completion marker, example index and records."""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ttlx import settings
from ttlx.errors import DataError

MARKER = "prepared.json"  # written last: a dataset folder without it is not prepared
INDEX = "index.npz"
FORMAT = 1
OWN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a name given to `ttlx prepare --name`


def default_data_dir() -> Path:
    return settings.data_dir()


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset as read back from ``<data_dir>/<name>/``."""

    root: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def multilabel(self) -> bool:
        return bool(self.meta["multilabel"])

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def records_dir(self) -> Path:
        return self.root / self.meta["records"]

    @cached_property
    def index(self) -> dict[str, np.ndarray]:
        """ids, labels, groups and strata of every stored example, in record order."""
        with np.load(self.root / INDEX, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    @cached_property
    def position(self) -> dict[str, int]:
        return {str(i): n for n, i in enumerate(self.index["ids"])}

    def positions(self, ids: list[str], where: str) -> np.ndarray:
        """Record positions of ``ids``; unknown ids are a DataError naming ``where`` they came from."""
        lookup = self.position
        unknown = [i for i in ids if i not in lookup]
        if unknown:
            raise DataError(
                f"{where} lists {len(unknown)} ids that '{self.name}' does not have (first: {unknown[0]}); "
                "re-run `ttlx prepare` or fix the split file."
            )
        return np.fromiter((lookup[i] for i in ids), dtype=np.int64, count=len(ids))


def prepared_name(dataset: str, data_dir: str | Path | None) -> str:
    """The folder of ``dataset`` under ``data_dir``: a registered dataset's canonical name (aliases and any case
    accepted), or a name a user gave their own data with ``ttlx prepare folder|csv|volumes --name NAME``."""
    from ttlx.registry import UnknownNameError, datasets

    try:
        return datasets.resolve(dataset)
    except UnknownNameError:
        root = resolve_data_dir(data_dir)
        if OWN_NAME.fullmatch(dataset) and (root / dataset / MARKER).is_file():
            return dataset
        own = ", ".join(own_datasets(root)) or "none there yet"
        raise UnknownNameError(
            f"Unknown dataset '{dataset}'; choose one of: {', '.join(datasets.names())}, or a name given with "
            f"`ttlx prepare folder|csv|volumes --name` in {root} ({own})."
        ) from None


def own_datasets(data_dir: Path) -> list[str]:
    """The names of the datasets prepared with ``--name`` under ``data_dir``."""
    found = []
    for marker in sorted(data_dir.glob(f"*/{MARKER}")) if data_dir.is_dir() else []:
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("dataset") not in (None, meta.get("name")):
            found.append(marker.parent.name)
    return found


def load_prepared(name: str, data_dir: str | Path | None) -> Prepared:
    """The prepared dataset ``name`` (canonical) under ``data_dir``, or a DataError saying how to make it."""
    data_dir = resolve_data_dir(data_dir)
    root = data_dir / name
    marker = root / MARKER
    if not marker.is_file():
        raise DataError(
            f"Dataset '{name}' is not prepared in {data_dir}; run `ttlx prepare {name} --data-dir {data_dir}` first."
        )
    meta = json.loads(marker.read_text())
    if meta.get("format") != FORMAT:
        raise DataError(
            f"Dataset '{name}' in {data_dir} was prepared by another ttlx version; prepare it with --force."
        )
    return Prepared(root, meta)


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) says the disk or the user's quota is full; writers in C++
    (ArrayRecord) report it as a RuntimeError whose message holds the system's words."""
    words = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
    seen: BaseException | None = err
    for _ in range(20):  # a chain of causes, bounded in case one refers back to another
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(w in str(seen) for w in words):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_error(data_dir: Path, name: str, free: int) -> DataError:
    """The one sentence for a prepare that filled its disk (its partial build is deleted by the caller)."""
    return DataError(
        f"The disk holding {data_dir} filled up while preparing '{name}' ({_megabytes(free)} were free); "
        "free space there or pass --data-dir on a larger disk (the data dir is left as it was)."
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def write_index(root: Path, ids: list[str], labels: np.ndarray, groups: list[str], strata: np.ndarray) -> None:
    np.savez(
        root / INDEX,
        ids=np.asarray(ids, dtype=str),
        labels=labels,
        groups=np.asarray(groups, dtype=str),
        strata=np.asarray(strata, dtype=np.int64),
    )


def write_marker(root: Path, meta: dict) -> None:
    path = root / MARKER
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **meta}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
