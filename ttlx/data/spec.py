"""What a dataset plugin provides: a spec that lists its examples, and the checks every spec shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np

from ttlx.errors import DataError

# An image is a file, its encoded bytes, a uint8 array (HxW or HxWx3), or a function returning one.
ImageSource = Union[Path, bytes, np.ndarray, Callable[[], np.ndarray]]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class Example:
    """One image of a dataset with its label, before it is stored."""

    id: str  # the dataset's own image id (HAM10000 image_id, CheXpert Path, ...)
    label: int | tuple[int, ...]  # class index, or per-finding raw values 1/0/-1 when multi-label
    image: ImageSource
    group: str = ""  # examples of one group (lesion, patient) never straddle two splits; "" = own group
    split: str = ""  # the official split (train/val/test) of datasets that come with one

    @property
    def group_key(self) -> str:
        return self.group or self.id

    @property
    def file_name(self) -> str:
        """How a report names this image: its file when it has one, else its id."""
        return str(self.image) if isinstance(self.image, Path) else self.id


@dataclass(frozen=True)
class Catalog:
    """Everything a spec found in its source: the class list and the examples."""

    classes: tuple[str, ...]
    examples: list[Example] = field(repr=False)
    # volumes only: the (low, high) voxel values the loader scales to [0, 1], when the scan chose them
    # (``volumes --intensity-window``); None keeps the spec's ``intensity_window`` or the CT window
    intensity_window: tuple[float, float] | None = None


class DatasetSpec:
    """Base class of a dataset plugin; subclasses set the class attributes and implement ``scan``.

    A plugin registers an instance under the ``ttlx.datasets`` entry-point group. The entry-point name
    is the dataset's canonical name (and its folder under the data dir); ``aliases`` are other
    spellings. ``options`` declares the extra ``prepare`` options the spec accepts, with defaults.
    """

    name: ClassVar[str] = "dataset"  # used in messages; the registry's entry-point name names the folder
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    multilabel: ClassVar[bool] = False
    channels: ClassVar[int] = 3  # as stored: 1 (grayscale) or 3 (RGB)
    encoding: ClassVar[str] = "jpeg"  # how images are re-encoded: jpeg or png
    pad_square: ClassVar[bool] = False  # pad to a square with white before storing (HAM10000)
    max_size: ClassVar[int] = 256  # default bound on the shorter stored side; 0 keeps the original
    needs_manual_dir: ClassVar[bool] = True
    download: ClassVar[str] = ""  # where users get the files (shown when the manual dir is missing)
    official_splits: ClassVar[bool] = False  # every repeat uses Example.split instead of random splits
    id_columns: ClassVar[tuple[str, ...]] = ("id",)  # columns naming the id in imported split files
    options: ClassVar[dict[str, Any]] = {}
    volumetric: ClassVar[bool] = False  # examples are CT/MRI volumes (ttlx.data.volumes), stored as int16 HU
    # volumes: the (low, high) values the loader scales to [0, 1]; None is CT's window (ttlx.data.volumes.HU_WINDOW)
    intensity_window: ClassVar[tuple[float, float] | None] = None
    nameable: ClassVar[bool] = False  # a user's own data: `ttlx prepare --name NAME` stores it under NAME

    def scan(self, manual_dir: Path | None, **options: Any) -> Catalog:
        """List the classes and examples found in ``manual_dir`` (raise DataError for bad input)."""
        raise NotImplementedError

    def stratify_key(self, label: int | tuple[int, ...], frequencies: np.ndarray) -> int:
        """The label used to stratify splits; multi-label specs use the rarest positive finding."""
        if not self.multilabel:
            return int(label)
        positive = [i for i, v in enumerate(label) if v == 1]
        return int(min(positive, key=lambda i: frequencies[i])) if positive else -1


def require_manual_dir(spec: DatasetSpec, manual_dir: Path | None, needed: Sequence[str]) -> Path:
    """The manual dir, after checking it holds every path in ``needed``; one message lists what is missing."""
    spec_name = spec.name
    where = f" Download it from {spec.download}" if spec.download else ""
    if manual_dir is None:
        raise DataError(f"Dataset '{spec_name}' needs its downloaded files: pass --manual-dir PATH.{where}")
    manual_dir = Path(manual_dir).expanduser()
    if not manual_dir.is_dir():
        raise DataError(f"The manual dir {manual_dir} does not exist; pass the folder holding '{spec_name}'.{where}")
    missing = [name for name in needed if not (manual_dir / name.rstrip("/")).exists()]
    if missing:
        raise DataError(
            f"The manual dir {manual_dir} is incomplete for '{spec_name}': missing {', '.join(missing)}.{where}"
        )
    return manual_dir


def check_catalog(spec_name: str, catalog: Catalog) -> None:
    """Refuse duplicate ids, an image file used twice and classes without images."""
    if not catalog.examples:
        raise DataError(f"Dataset '{spec_name}' has no images; check the manual dir.")
    duplicates = _repeated(e.id for e in catalog.examples)
    if duplicates:
        raise DataError(f"Dataset '{spec_name}' has duplicate ids: {_listing(duplicates)}; ids must be unique.")
    files = _repeated(str(e.image) for e in catalog.examples if isinstance(e.image, Path))
    if files:
        raise DataError(
            f"Dataset '{spec_name}' references the same image more than once: {_listing(files)}; list each image once."
        )
    empty = _empty_classes(catalog)
    if empty:
        raise DataError(f"Dataset '{spec_name}' has classes without images: {_listing(empty)}.")


def bad_labels(spec_name: str, csv_path: Path, rows: list[int], allowed: Sequence[str]) -> DataError:
    """The error for CSV rows whose label is not one of ``allowed`` (rows numbered as in the file)."""
    return DataError(
        f"{csv_path} has labels outside the class list of '{spec_name}' ({', '.join(allowed)}) "
        f"on rows {_listing([str(r) for r in rows])}; fix those rows."
    )


def _empty_classes(catalog: Catalog) -> list[str]:
    if not catalog.examples or isinstance(catalog.examples[0].label, tuple):
        return []  # a finding absent from a multi-label set is allowed (all-negative column)
    counts = Counter(int(e.label) for e in catalog.examples)
    return [name for i, name in enumerate(catalog.classes) if counts[i] == 0]


def _repeated(values) -> list[str]:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def _listing(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"
