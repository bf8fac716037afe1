"""``volumes``: a user's own CT/MRI volumes with study-level labels, one sub-folder per class or a CSV.

A volume is a NIfTI file (``.nii``, ``.nii.gz``, read by :mod:`ttlx.data.nifti`), a folder holding one DICOM
series (:func:`ttlx.data.dicom.read_series`: slices sorted along the slice normal, spacing from the positions),
an enhanced multi-frame DICOM file (:mod:`ttlx.data.dicom_frames`) or a ``.npy`` array of integer HU (slices,
height, width). Without ``--csv`` the manual dir holds one sub-folder per class; inside a class folder every
NIfTI or ``.npy`` file is a volume and every folder of DICOM files a series (single-slice DICOM files directly
in a class folder are refused: one folder per series). With ``--csv FILE`` the rows are
``path,label[,group][,id]`` as for ``csv``, a path naming a file or a series folder under the manual dir. Splits
are random 64/16/20 x 3 repeats stratified by class and grouped by patient: the CSV's group column, else a DICOM
series' PatientID; a volume without either is its own group.

Voxels become int16: DICOM values through Rescale Slope/Intercept and NIfTI values through their scaling are
rounded (HU are whole numbers); a floating-point NIfTI or ``.npy`` with fractions is a bad volume, as is one
that is truncated, empty, not 3D, outside int16, or a series with missing slices or inconsistent spacing.
Bad volumes are listed by name and stop the build unless ``--on-bad-image skip``.

The loader scales voxels to [0, 1] through a window: the CT window [-100, 900] HU by default, or
``--intensity-window LOW,HIGH`` for other modalities (MRI intensities are not HU: choose their range).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ttlx.data import dicom, nifti
from ttlx.data.datasets.csvlist import CsvList
from ttlx.data.datasets.folder import class_list
from ttlx.data.dicom_frames import frame_count, read_frames
from ttlx.data.spec import Catalog, Example, require_manual_dir
from ttlx.data.volumes import BadVolume, Volume, load_npy
from ttlx.errors import ConfigError, DataError


class Volumes(CsvList):
    name = "volumes"
    aliases = ("volumefolder", "volume-folder")
    description = "your own CT/MRI volumes (NIfTI, DICOM series folders, .npy), one sub-folder per class or --csv"
    volumetric = True
    nameable = True
    channels = 1
    encoding = "int16"
    max_size = 256  # in-plane: the longer side of each slice at most this many pixels
    options = {"csv": None, "classes": None, "intensity_window": None}
    id_columns = ("id", "path", "study", "image_id")

    def scan(self, manual_dir: Path | None, csv: str | Path | None = None, classes: str | None = None,
             intensity_window: str | None = None) -> Catalog:
        window = parse_window(intensity_window)
        root = require_manual_dir(self, manual_dir, [])
        if csv is not None:
            catalog = super().scan(root, csv=csv, classes=classes)
            examples = [Example(e.id, e.label, VolumeFile(e.image), e.group) for e in catalog.examples]
            return Catalog(catalog.classes, examples, window)
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(f"{root} has no sub-folders; put the volumes of each class in a sub-folder named after it, "
                            "or pass --csv.")
        wanted = class_list(classes) or tuple(folders)
        strangers = [f for f in folders if f not in wanted]
        if strangers:
            raise DataError(f"{root} has folders outside the class list ({', '.join(wanted)}): "
                            f"{', '.join(strangers)}; move them out or add them to --classes.")
        examples = []
        for label, name in enumerate(wanted):
            for path in volumes_in(root / name) if (root / name).is_dir() else []:
                examples.append(Example(path.relative_to(root).as_posix(), label, VolumeFile(path),
                                        group=_patient(path)))
        return Catalog(wanted, examples, window)


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``--intensity-window LOW,HIGH`` as two numbers with LOW < HIGH; None when not given."""
    if text is None:
        return None
    parts = str(text).split(",")
    try:
        low, high = (float(v) for v in parts)
    except ValueError:
        low = high = None
    if low is None or not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(f"--intensity-window must be two numbers LOW,HIGH with LOW < HIGH (e.g. 0,2000 for an "
                          f"MRI series), got '{text}'.")
    return low, high


def volumes_in(folder: Path) -> list[Path]:
    """The volumes under a class folder: NIfTI and .npy files, and the folders that hold DICOM files."""
    loose = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _dicom_file(p))
    found = [p for p in loose if _frames(p) > 1]  # an enhanced multi-frame file holds a whole series
    single = [p.name for p in loose if p not in found]
    if single:
        raise DataError(f"{folder} holds single-slice DICOM files directly ({', '.join(single[:3])}); put each "
                        "series in a folder of its own inside the class folder.")
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(here)
        names = sorted(f for f in files if not f.startswith("."))
        found += [here / f for f in names if nifti.is_nifti(Path(f)) or f.lower().endswith(".npy")]
        if here != folder and any(_dicom_file(here / f) for f in names):
            found.append(here)
    return sorted(found)


UNREADABLE = (ValueError, TypeError, IndexError, KeyError, AttributeError, OSError, EOFError, RuntimeError,
              OverflowError, NotImplementedError, zlib.error, struct.error)


class VolumeFile:
    """A volume read on a builder thread when the dataset is stored (a NIfTI or .npy file, or a series folder)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"VolumeFile({str(self.path)!r})"

    def __call__(self) -> Volume | np.ndarray:
        try:
            return self._read()
        except (dicom.DicomError, nifti.NiftiError) as err:
            raise BadVolume(str(err)) from None
        except UNREADABLE as err:  # a header field the readers did not expect: this file's fault, not a crash
            text = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
            raise BadVolume(f"unreadable ({text})") from None

    def _read(self) -> Volume | np.ndarray:
        path = self.path
        if path.is_dir():
            values, spacing = dicom.read_series(path)
            return Volume(whole_numbers(values, rounded=True), spacing)
        if not path.exists():
            raise BadVolume("file not found")
        if _dicom_file(path):
            values, spacing = read_frames(path)
            return Volume(whole_numbers(values, rounded=True), spacing)
        if nifti.is_nifti(path):
            values, spacing = nifti.read_nifti(path)
            return Volume(whole_numbers(values, rounded=False), spacing)
        if path.suffix.lower() == ".npy":
            return load_npy(path)
        raise BadVolume("not a volume: use NIfTI (.nii, .nii.gz), a folder of one DICOM series, or .npy")


def whole_numbers(values: np.ndarray, *, rounded: bool) -> np.ndarray:
    """Integer voxels: integers as they are, floats rounded when ``rounded`` (rescaled integers) or when they are
    whole already; BadVolume for NaN or infinite values and for floats with fractions."""
    if np.issubdtype(values.dtype, np.integer):
        return values
    if not np.issubdtype(values.dtype, np.floating):
        raise BadVolume(f"{values.dtype} voxels; volumes are stored as integer HU (int16)")
    if not np.isfinite(values).all():
        raise BadVolume("NaN or infinite voxels")
    whole = np.rint(values)
    if not rounded and not np.array_equal(whole, values):
        raise BadVolume(f"{values.dtype} voxels with fractions; volumes are stored as integer HU (int16): round or "
                        "rescale them first")
    if whole.size and (whole.min() < -32768 or whole.max() > 32767):
        raise BadVolume(f"values {int(whole.min())}..{int(whole.max())} do not fit int16")
    return whole.astype(np.int16)


def _dicom_file(path: Path) -> bool:
    return not nifti.is_nifti(path) and not path.name.lower().endswith(".npy") and dicom.is_dicom(path)


def _frames(path: Path) -> int:
    try:
        return frame_count(path)
    except dicom.DicomError:
        return 2  # unreadable: listed as a bad volume with its reason when the dataset is stored


def _patient(path: Path) -> str:
    """The PatientID of a DICOM series or multi-frame file (one header), '' for other files or without one."""
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        if file.is_file() and _dicom_file(file):
            try:
                import pydicom

                patient = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID")
            except Exception:  # noqa: BLE001 (an unreadable slice is reported when the series is read)
                return ""
            return f"patient:{patient}" if patient else ""
    return ""


VOLUMES = Volumes()
