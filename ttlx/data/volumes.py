"""Volumes (CT, MRI) as a prepared dataset stores them, and what a volumetric dataset spec hands over.

**What a spec provides.** A spec with ``volumetric = True`` lists :class:`~ttlx.data.spec.Example` objects
whose ``image`` is a callable (called on a builder thread, once) returning a :class:`Volume`, or a plain
integer ndarray (slices, height, width) when spacing and slice labels are unknown. A callable that cannot
read its source raises :class:`BadVolume` with a short reason (``load_npy`` does so for a truncated file);
the build lists every bad volume by name and stops unless ``--on-bad-image skip``, as for 2D images.
:func:`checked` refuses the rest: not three dimensions, no voxels, a float, bool or object dtype (HU are
integers: convert and round first), values outside int16, a non-positive spacing, slice labels outside the
volume. A spec whose voxels are not CT Hounsfield units sets ``intensity_window = (low, high)``, the values
the loader scales to [0, 1] (default: the PENet reference's [-100, 900] HU).

**How they are stored** (under ``<dataset>/records/``, where 2D datasets keep their ArrayRecord files). Every
slice is shrunk, keeping the aspect ratio, so that its longer side is at most the spec's ``max_size`` (area
interpolation; ``--max-size 0`` keeps it), rounded to int16 HU and appended to one raw file, ``voxels.i16``;
``studies.npz`` records each study's offset, shape, spacing in mm (slices, rows, columns; the in-plane spacing
grows with the shrink) and its per-slice labels. A reader maps the file into memory (:class:`VolumeStore`) and
a window of 24 slices is one contiguous slice of it: nothing is decoded, the page cache holds what was read,
and worker processes share it. The decision against ArrayRecord records per slab: a window then needs 2-4
records decoded and joined, and TFDS's reader parses each record's features; the memory map returns the same
window as a view (docs/internals/architecture.md, "Volumes", gives the numbers). The rest of a prepared volume
dataset is the 2D layout: ``prepared.json`` written last, ``index.npz``, split files, and the build in a
hidden folder that replaces the dataset only once complete.
``slice_labels.csv`` lists each study's positive slices.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttlx.data.spec import Catalog, DatasetSpec, Example

VOXELS = "voxels.i16"
STUDIES = "studies.npz"
SLICE_LABELS = "slice_labels.csv"
AIR_HU = -1000  # the padding value beyond a study's first and last slice
HU_WINDOW = (-100.0, 900.0)  # the PENet reference's contrast window; a spec may set its own intensity_window
_CHUNK = 8  # volumes read ahead of the writer (a CT study holds ~100 MB before the in-plane shrink)


class BadVolume(Exception):
    """A volume that cannot be read or is not a volume (truncated, wrong dtype, empty); the message says why."""


@dataclass(frozen=True)
class Volume:
    """One study's voxels as a spec hands them over."""

    hu: np.ndarray  # (slices, height, width), integer Hounsfield units (or MRI intensities within int16)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm between slices, rows and columns
    positive_slices: tuple[int, ...] | None = None  # 0-based slices showing the finding; None: not known


def load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` volume, memory-mapped; BadVolume for a missing, truncated or non-npy file."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise BadVolume("file not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise BadVolume(f"not a complete .npy file ({str(err).splitlines()[0][:80]})") from None


def checked(source) -> Volume:
    """The Volume a spec's example gives, checked; BadVolume with the reason otherwise."""
    if isinstance(source, Path):
        source = load_npy(source)
    elif callable(source) and not isinstance(source, np.ndarray):
        source = source()
    volume = source if isinstance(source, Volume) else Volume(source)
    hu = volume.hu
    if not isinstance(hu, np.ndarray) or hu.ndim != 3:
        shape = getattr(hu, "shape", None)
        raise BadVolume(f"not a 3D volume (shape {shape}); expected slices x height x width")
    if hu.size == 0:
        raise BadVolume(f"empty volume (shape {'x'.join(map(str, hu.shape))})")
    if not np.issubdtype(hu.dtype, np.integer):
        raise BadVolume(f"{hu.dtype} voxels; volumes are stored as integer HU (int16)")
    if hu.dtype != np.int16:
        low, high = int(hu.min()), int(hu.max())
        if low < -32768 or high > 32767:
            raise BadVolume(f"values {low}..{high} do not fit int16")
    spacing = tuple(float(s) for s in volume.spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise BadVolume(f"spacing {volume.spacing} is not three positive numbers")
    positives = volume.positive_slices
    if positives is not None and any(not 0 <= int(i) < hu.shape[0] for i in positives):
        raise BadVolume(f"positive slices outside 0..{hu.shape[0] - 1}")
    return Volume(hu, spacing, None if positives is None else tuple(sorted({int(i) for i in positives})))


def shrink(hu: np.ndarray, max_size: int) -> np.ndarray:
    """int16 slices whose longer side is at most ``max_size`` (area interpolation, aspect kept)."""
    depth, height, width = hu.shape
    if not max_size or max(height, width) <= max_size:
        return np.ascontiguousarray(hu, dtype=np.int16)
    from PIL import Image

    scale = max_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    out = np.empty((depth, size[1], size[0]), np.int16)
    for k in range(depth):
        plane = Image.fromarray(np.asarray(hu[k], dtype=np.float32), mode="F").resize(size, Image.BOX)
        out[k] = np.clip(np.rint(np.asarray(plane)), -32768, 32767)
    return out


def build_volumes(root: Path, dataset: str, spec: DatasetSpec, catalog: Catalog, *, max_size: int,
                  advance: Callable[[int], None] = lambda n: None):
    """Store every readable volume of ``catalog`` in ``root`` (the records folder of a build; the per-study
    ``slice_labels.csv`` goes beside it); returns a :class:`ttlx.data.builder.BuildResult` as the 2D builder."""
    from ttlx.data.builder import BuildResult

    folder = root
    folder.mkdir(parents=True, exist_ok=True)
    result = BuildResult(records_dir=folder)
    offsets, shapes, spacings, labels, known, slice_rows = [], [], [], [], [], []
    offset = 0
    with open(folder / VOXELS, "wb") as out:
        for position, volume, problem in _read_all(catalog.examples, max_size):
            advance(1)
            example = catalog.examples[position]
            if problem is not None:
                result.bad.append((example.file_name, problem))
                continue
            hu = volume.hu
            out.write(hu.tobytes())
            result.written.append(position)
            offsets.append(offset)
            offset += hu.size
            shapes.append(hu.shape)
            spacings.append(volume.spacing)
            flags = np.zeros(hu.shape[0], np.uint8)
            if volume.positive_slices:
                flags[list(volume.positive_slices)] = 1
            labels.append(flags)
            known.append(volume.positive_slices is not None)
            slice_rows.append((example.id, hu.shape[0], _ranges(volume.positive_slices)))
        out.flush()
        os.fsync(out.fileno())
    counts = np.asarray([s[0] for s in shapes], np.int64)
    np.savez(folder / STUDIES, offsets=np.asarray(offsets, np.int64),
             shapes=np.asarray(shapes, np.int64).reshape(-1, 3),
             spacing=np.asarray(spacings, np.float32).reshape(-1, 3),
             slice_starts=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
             slice_labels=np.concatenate(labels) if labels else np.zeros(0, np.uint8),
             labels_known=np.asarray(known, bool),
             intensity_window=np.asarray(catalog.intensity_window or spec.intensity_window or HU_WINDOW,
                                         np.float32))
    with open(root.parent / SLICE_LABELS, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "slices", "positive_slices"])
        writer.writerows(slice_rows)
    return result


def _ranges(positives) -> str:
    """``12-30;45``: the positive slices as ranges; '' for none, '?' when not known."""
    if positives is None:
        return "?"
    parts, run = [], []
    for i in positives:
        if run and i != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(i)
    if run:
        parts.append(run)
    return ";".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in parts)


def _read_all(examples: list[Example], max_size: int):
    """(position, shrunk Volume or None, reason or None) in catalog order, read on a thread pool."""

    def read(position: int):
        try:
            volume = checked(examples[position].image)
            return position, Volume(shrink(volume.hu, max_size), _shrunk_spacing(volume, max_size),
                                    volume.positive_slices), None
        except BadVolume as err:
            return position, None, str(err)
        except MemoryError:
            return position, None, "too large to hold in memory"

    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    try:
        for start in range(0, len(examples), _CHUNK):
            yield from pool.map(read, range(start, min(start + _CHUNK, len(examples))))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _shrunk_spacing(volume: Volume, max_size: int) -> tuple[float, float, float]:
    _, height, width = volume.hu.shape
    if not max_size or max(height, width) <= max_size:
        return volume.spacing
    scale = max(height, width) / max_size
    return (volume.spacing[0], volume.spacing[1] * scale, volume.spacing[2] * scale)


class VolumeStore:
    """Windows of the stored volumes by record position; pickles as its path so grain workers reopen it."""

    def __init__(self, folder: Path):
        self.folder = os.fspath(folder)
        self._voxels = None
        with np.load(Path(folder) / STUDIES, allow_pickle=False) as data:
            self.studies = {key: data[key] for key in data.files}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_voxels": None}

    def __len__(self) -> int:
        return len(self.studies["offsets"])

    def _map(self) -> np.ndarray:
        if self._voxels is None:
            path = Path(self.folder) / VOXELS
            self._voxels = (np.memmap(path, dtype=np.int16, mode="r") if path.stat().st_size
                            else np.zeros(0, np.int16))
        return self._voxels

    @property
    def intensity_window(self) -> tuple[float, float]:
        """The (low, high) values the loader scales to [0, 1]: the spec's ``intensity_window``, else HU_WINDOW."""
        window = self.studies.get("intensity_window")
        return HU_WINDOW if window is None else (float(window[0]), float(window[1]))

    def shape(self, position: int) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.studies["shapes"][position])

    def spacing(self, position: int) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.studies["spacing"][position])

    def slice_labels(self, position: int) -> np.ndarray | None:
        """Per-slice 0/1 of one study (uint8), or None when the dataset does not know them."""
        if not self.studies["labels_known"][position]:
            return None
        start, stop = self.studies["slice_starts"][position:position + 2]
        return self.studies["slice_labels"][start:stop]

    def volume(self, position: int) -> np.ndarray:
        """The whole study, (slices, height, width) int16, a read-only view of the map."""
        depth, height, width = self.shape(position)
        offset = int(self.studies["offsets"][position])
        return self._map()[offset:offset + depth * height * width].reshape(depth, height, width)

    def window(self, position: int, start: int, length: int) -> np.ndarray:
        """Slices ``start .. start+length`` of one study (int16); slices outside it are air (-1000 HU)."""
        study = self.volume(position)
        depth = study.shape[0]
        lo, hi = max(start, 0), min(start + length, depth)
        if lo == start and hi == start + length:
            return np.asarray(study[lo:hi])
        out = np.full((length, *study.shape[1:]), AIR_HU, np.int16)
        if hi > lo:
            out[lo - start:hi - start] = study[lo:hi]
        return out
