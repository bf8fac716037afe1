"""NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel, laid out as DICOM series are.

A NIfTI array is indexed along the axes its affine says (often x, y, z in RAS+ or LAS+). The reader turns it
to the closest canonical orientation (RAS+, ``nibabel.as_closest_canonical``) and then to the layout of an axial
DICOM series: slices from inferior to superior, rows from anterior to posterior, columns from the patient's
right to left (LPS, the radiological view), i.e. ``(slices, rows, columns)``. The spacing in mm follows the
same axes. The voxel values include the header's scaling (``scl_slope``/``scl_inter``).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

SUFFIXES = (".nii", ".nii.gz")


class NiftiError(Exception):
    """A file that is not a readable 3D NIfTI volume; the message says why."""


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The voxels (slices, rows, columns), with the header's scaling applied, and the spacing in mm."""
    import nibabel as nib

    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise NiftiError("file not found") from None
    except _unreadable() as err:
        raise NiftiError(_reason(err, path)) from None
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
    elif len(shape) != 3:
        raise NiftiError(f"{len(shape)}D image of shape {'x'.join(map(str, shape))}; a volume has three dimensions")
    try:
        image = nib.as_closest_canonical(image)
        data = np.asanyarray(image.dataobj)
    except _unreadable() as err:
        raise NiftiError(_reason(err, path)) from None
    if np.issubdtype(image.get_data_dtype(), np.integer) and not np.issubdtype(data.dtype, np.integer):
        data = np.rint(data)  # stored integers through scl_slope/scl_inter: whole numbers again (HU)
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    volume = np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))  # RAS (x, y, z) -> LPS (z, y, x)
    return volume, (zooms[2], zooms[1], zooms[0])


def _unreadable() -> tuple[type[Exception], ...]:
    """What nibabel raises for a damaged file: a bad header, an offset or shape past the end, no orientation."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.orientations import OrientationError
    from nibabel.spatialimages import HeaderDataError, ImageDataError

    return (ImageFileError, HeaderDataError, ImageDataError, OrientationError, OSError, EOFError, ValueError,
            OverflowError, TypeError, IndexError, zlib.error)


def _reason(err: Exception, path: Path) -> str:
    if path.is_file() and path.stat().st_size == 0:
        return "empty file"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    lowered = text.replace(str(path), "").lower()  # the file's own name must not decide the reason
    if isinstance(err, (EOFError, zlib.error)) or "truncat" in lowered or "end-of-stream" in lowered \
            or "expected" in lowered and "bytes" in lowered or "cannot reshape" in lowered:
        return "truncated"
    if "cannot work out file type" in lowered or "not a gzipped file" in lowered:
        return "truncated" if _truncated_gzip(path) else "not a NIfTI file"
    return text[:80]


def _truncated_gzip(path: Path) -> bool:
    """Whether ``path`` is a gzip stream that ends early (nibabel then cannot even read the header)."""
    if not path.name.lower().endswith(".gz"):
        return False
    try:
        with gzip.open(path) as f:
            while f.read(1 << 20):
                pass
    except EOFError:
        return True
    except (OSError, zlib.error):
        return False
    return False
