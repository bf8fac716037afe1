"""An enhanced multi-frame DICOM file (Enhanced CT/MR: the whole series in one file) as a volume.

The geometry lives in functional groups: each frame's ImagePositionPatient in its PlanePositionSequence, the
orientation (PlaneOrientationSequence), pixel spacing (PixelMeasuresSequence) and rescale
(PixelValueTransformationSequence) per frame or shared by all. Frames are sorted and checked as the slices of
a series folder are (:func:`ttlx.data.dicom.read_series`): along the slice normal, spacing from the positions,
missing frames and uneven steps refused. A multi-frame file without per-frame positions is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.data.dicom import DicomError, _pixels, _read, _slice_spacing, guarded, number, whole_int16


def frame_count(path: Path) -> int:
    """NumberOfFrames from the header alone (1 for a single-frame file)."""
    return guarded(lambda: number(_read(path, pixels=False), "NumberOfFrames", 1))


def read_frames(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume (slices, rows, columns) of modality values rounded to int16 and its spacing in mm of one
    multi-frame file."""
    return guarded(_frames, path)


def _frames(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    ds = _read(path)
    frames = number(ds, "NumberOfFrames", 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    if frames < 2 or per_frame is None or len(per_frame) != frames:
        raise DicomError(f"{frames} frame(s) without per-frame positions (PerFrameFunctionalGroupsSequence); a "
                         "volume file needs them (or export one file per slice into a series folder)")

    def group(frame, name: str):
        for item in (frame, shared):
            if item is not None and name in item and len(item[name].value):
                return item[name].value[0]
        return None

    planes = [group(f, "PlanePositionSequence") for f in per_frame]
    orientations = [group(f, "PlaneOrientationSequence") for f in per_frame]
    if any(p is None or "ImagePositionPatient" not in p for p in planes) or any(o is None for o in orientations):
        raise DicomError("frames without a position or orientation (PlanePosition/PlaneOrientationSequence)")
    directions = np.asarray([[float(v) for v in o.ImageOrientationPatient] for o in orientations])
    if np.abs(directions - directions[0]).max() > 1e-3:
        raise DicomError("frames with different orientations (ImageOrientationPatient)")
    normal = np.cross(directions[0][:3], directions[0][3:])
    normal /= np.linalg.norm(normal)
    heights = np.asarray([np.dot([float(v) for v in p.ImagePositionPatient], normal) for p in planes])
    measures = group(per_frame[0], "PixelMeasuresSequence")
    row_mm, col_mm = (float(v) for v in measures.PixelSpacing) if measures is not None else (1.0, 1.0)
    order = np.argsort(heights, kind="stable")
    spacing = _slice_spacing(heights[order], [f"frame {k + 1}" for k in order])
    pixels = _pixels(ds)
    if pixels.ndim != 3 or pixels.shape[0] != frames:
        raise DicomError(f"pixel data of shape {pixels.shape} for {frames} frames")
    volume = np.empty(pixels.shape, np.int16)
    for out, k in enumerate(order):
        rescale = group(per_frame[k], "PixelValueTransformationSequence") or ds
        slope, intercept = float(rescale.get("RescaleSlope", 1) or 1), float(rescale.get("RescaleIntercept", 0) or 0)
        volume[out] = whole_int16(pixels[k] * slope + intercept, f"frame {k + 1}")
    return volume, (spacing, row_mm, col_mm)
