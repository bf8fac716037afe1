"""DICOM through pydicom: one file as a 2D image (``folder``, ``csv``), a folder of slices as a volume (``volumes``).

**Pixels to a stored 2D image.** The stored values go through the modality LUT (Rescale Slope and Intercept:
CT in HU), then the file's VOI transform where the file has one: its VOI LUT Sequence (pydicom's
``apply_voi``), else its first Window Center/Width with its VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID,
the formulas of PS3.3 C.11.2.1.2), else the image's own minimum to maximum. The result, 0..1, is stored as
8 bits; MONOCHROME1 (white is the lowest value, common in CR) is inverted so that bone is bright in every
stored image. Colour files (RGB, YBR, PALETTE COLOR) are stored as RGB. A multi-frame file is not a 2D
image and is refused by name.

**Compressed files** are decoded by pydicom's plugins: JPEG baseline and JPEG 2000 through Pillow and
pylibjpeg-openjpeg (dependencies of ttlx), RLE natively; JPEG Lossless and JPEG-LS need GDCM
(``pip install 'ttlx[dicom-lossless]'``, python-gdcm, BSD-licensed; pylibjpeg-libjpeg would do too but is
GPL-3). A file no installed plugin decodes is a bad image whose reason says what to install.

**A series** (:func:`read_series`): every DICOM file of a folder, one SeriesInstanceUID, one orientation and
one slice size; slices are sorted by ImagePositionPatient projected on the slice normal (the cross product of
ImageOrientationPatient's row and column directions), and the slice spacing is the distance between
neighbouring positions, never SliceThickness. Gaps of a whole multiple of the spacing are missing slices,
other unequal steps inconsistent spacing: both refuse the series with the positions where it happens.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

PREAMBLE = 128  # bytes before the b"DICM" magic of a DICOM file
SPACING_TOLERANCE = 0.01  # relative: positions may carry rounding of ~1e-3 mm in slices of ~1 mm


HEADER_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, ZeroDivisionError,
                 NotImplementedError, RuntimeError, struct.error)


class DicomError(Exception):
    """A file that is not a readable DICOM image, or a series that is not one volume; the message says why."""


class TooLarge(DicomError):
    """A header that claims more pixels than the caller allows (refused before any pixel is decoded)."""

    def __init__(self, pixels: int):
        super().__init__(f"too large: {pixels} pixels")
        self.pixels = pixels


def is_dicom(source: Path | bytes) -> bool:
    """A ``.dcm`` name, or the DICM magic after the 128-byte preamble."""
    if isinstance(source, Path):
        if source.suffix.lower() == ".dcm":
            return True
        try:
            with open(source, "rb") as f:
                head = f.read(PREAMBLE + 4)
        except OSError:
            return False
    else:
        head = bytes(source[: PREAMBLE + 4])
    return head[PREAMBLE:] == b"DICM"


def read_image(source: Path | bytes, max_pixels: int | None = None) -> np.ndarray:
    """The 8-bit image a 2D dataset stores for one DICOM file: HxW (grayscale) or HxWx3 (colour). A header
    claiming more than ``max_pixels`` pixels raises :class:`TooLarge` before anything is decoded."""
    ds = _read(source)
    try:
        frames = number(ds, "NumberOfFrames", 1)
        if frames > 1:
            raise DicomError(f"{frames} frames in one file; a 2D dataset takes single-frame images (a volume)")
        pixels = number(ds, "Rows", 0) * number(ds, "Columns", 0)
        if max_pixels is not None and pixels > max_pixels:
            raise TooLarge(pixels)
        return _displayed(_pixels(ds), ds)
    except DicomError:
        raise
    except (*HEADER_ERRORS, _length_error()) as err:  # pydicom parses elements when first read: damage shows here
        raise DicomError(f"unreadable header ({_short(err)})") from None


def _displayed(pixels: np.ndarray, ds) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim != 2:
            raise DicomError(f"{photometric} pixel data of shape {pixels.shape}")
        shown = voi(modality(pixels, ds), ds)
        if photometric == "MONOCHROME1":
            shown = 1.0 - shown
        return np.rint(shown * 255.0).astype(np.uint8)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(pixels, ds)
        top = 255 if rgb.dtype == np.uint8 else 65535
    else:  # RGB, or YBR that pydicom converted to RGB
        rgb, top = pixels, 2 ** number(ds, "BitsStored", 8) - 1
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise DicomError(f"{photometric} pixel data of shape {rgb.shape}")
    return np.clip(np.rint(rgb.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def modality(pixels: np.ndarray, ds) -> np.ndarray:
    """Stored values through Rescale Slope and Intercept (or the file's modality LUT), as float64."""
    from pydicom.pixels import apply_modality_lut

    return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)


def voi(values: np.ndarray, ds) -> np.ndarray:
    """Modality values to 0..1 through the file's VOI LUT, else its window, else the image's range."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        from pydicom.pixels import apply_voi

        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        lut_input = values.astype(np.int64) if np.array_equal(values, np.rint(values)) else values  # LUT indices
        return np.clip(np.asarray(apply_voi(lut_input, ds), np.float64) / (2**bits - 1), 0.0, 1.0)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        return window(values, center, width, function)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """A DICOM window (PS3.3 C.11.2.1.2-3) as 0..1."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise DicomError(f"a LINEAR window of width {width} (it must be at least 1)")
    if width == 1:
        return (values >= center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def read_series(folder: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume (slices, rows, columns) of modality values rounded to int16 (HU for CT) and its spacing in mm
    of the series in ``folder``; one slice at a time is held as float."""
    return guarded(_series, folder)


def guarded(read, *args):
    """``read(*args)`` with the errors of damaged header fields (parsed when first read) as DicomError."""
    try:
        return read(*args)
    except DicomError:
        raise
    except (*HEADER_ERRORS, _length_error()) as err:
        raise DicomError(f"unreadable header ({_short(err)})") from None


def _series(folder: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom(p))
    if not files:
        raise DicomError("no DICOM files in the folder")
    headers = [(p, _read(p, pixels=False)) for p in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) > 1:
        raise DicomError(f"{len(series)} series in one folder (SeriesInstanceUID); put each series in its own folder")
    normal, row_mm, col_mm, shape = _geometry(headers)
    order = sorted(headers, key=lambda h: float(np.dot(_position(h), normal)))
    positions = np.asarray([np.dot(_position(h), normal) for h in order])
    spacing = _slice_spacing(positions, [p.name for p, _ in order])
    volume = np.empty((len(order), *shape), np.int16)
    for k, (path, _) in enumerate(order):
        ds = _read(path)
        if number(ds, "NumberOfFrames", 1) > 1:
            raise DicomError(f"{path.name} holds several frames; a series folder holds one slice per file")
        pixels = _pixels(ds)
        if pixels.shape != shape:
            raise DicomError(f"{path.name} is {pixels.shape}, the other slices {shape}")
        volume[k] = whole_int16(modality(pixels, ds), path.name)
    return volume, (spacing, row_mm, col_mm)


def whole_int16(values: np.ndarray, where: str) -> np.ndarray:
    """Modality values rounded to int16; DicomError naming ``where`` for values outside int16."""
    whole = np.rint(values)
    if whole.size and (whole.min() < -32768 or whole.max() > 32767):
        raise DicomError(f"{where} holds values {int(whole.min())}..{int(whole.max())}, outside int16")
    return whole.astype(np.int16)


def _geometry(headers) -> tuple[np.ndarray, float, float, tuple[int, int]]:
    missing = [p.name for p, ds in headers if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds]
    if missing:
        raise DicomError(f"slices without ImagePositionPatient/ImageOrientationPatient: {', '.join(missing[:5])}")
    orientations = np.asarray([[float(v) for v in ds.ImageOrientationPatient] for _, ds in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise DicomError("slices with different orientations (ImageOrientationPatient)")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    shapes = {(number(ds, "Rows", 0), number(ds, "Columns", 0)) for _, ds in headers}
    if len(shapes) > 1:
        raise DicomError(f"slices of different sizes: {', '.join(f'{r}x{c}' for r, c in sorted(shapes))}")
    pixel_spacing = {tuple(float(v) for v in ds.get("PixelSpacing", (1.0, 1.0))) for _, ds in headers}
    if len(pixel_spacing) > 1:
        raise DicomError("slices with different PixelSpacing")
    row_mm, col_mm = next(iter(pixel_spacing))
    return normal / np.linalg.norm(normal), row_mm, col_mm, next(iter(shapes))


def _position(header) -> np.ndarray:
    return np.asarray([float(v) for v in header[1].ImagePositionPatient])


def _slice_spacing(positions: np.ndarray, names: list[str]) -> float:
    """The step between sorted slice positions; gaps and unequal steps are refused with where they are."""
    if len(positions) == 1:
        return 1.0
    steps = np.diff(positions)
    same = np.flatnonzero(steps < 1e-4)
    if len(same):
        i = int(same[0])
        raise DicomError(f"two slices at the same position {positions[i]:.2f} mm ({names[i]}, {names[i + 1]})")
    spacing = float(np.median(steps))
    off = np.flatnonzero(np.abs(steps - spacing) > SPACING_TOLERANCE * spacing + 1e-3)
    if not len(off):
        return float(steps.mean())
    i = int(off[0])
    ratio = steps[i] / spacing
    where = f"between {names[i]} and {names[i + 1]} ({positions[i]:.2f} and {positions[i + 1]:.2f} mm)"
    if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
        raise DicomError(f"{round(ratio) - 1} missing slice(s) {where}, the slice spacing being {spacing:.3g} mm")
    raise DicomError(f"inconsistent slice spacing: {steps[i]:.3g} mm {where}, {spacing:.3g} mm elsewhere")


def _read(source: Path | bytes, pixels: bool = True):
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    try:
        return pydicom.dcmread(source if isinstance(source, Path) else io.BytesIO(source),
                               stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise DicomError("file not found") from None
    except InvalidDicomError:
        raise DicomError("not a DICOM file (no DICM header)") from None
    except (OSError, EOFError, BytesLengthException, *HEADER_ERRORS) as err:
        raise DicomError(f"unreadable DICOM ({_short(err)})") from None


def _pixels(ds) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError("no pixel data (not an image)")
    try:
        return ds.pixel_array
    except RuntimeError as err:
        syntax = ds.file_meta.TransferSyntaxUID.name if "TransferSyntaxUID" in ds.get("file_meta", {}) else "?"
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if "missing dependencies" in str(err):
            raise DicomError(f"compressed as {syntax}, which no installed decoder reads: "
                             "pip install 'ttlx[dicom-lossless]' (GDCM)") from None
        if "all available plugins" in str(err) and len(lines) > 1:
            raise DicomError(f"compressed as {syntax}; the installed decoders failed ({lines[1][:100]})") from None
        raise DicomError(_short(err, pixels=True)) from None
    except (ValueError, NotImplementedError, AttributeError, KeyError, TypeError, EOFError, OSError) as err:
        raise DicomError(_short(err, pixels=True)) from None


def _length_error() -> type[Exception]:
    from pydicom.errors import BytesLengthException

    return BytesLengthException


def _short(err: Exception, pixels: bool = False) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if pixels and "expected" in text.lower() and ("bytes" in text.lower() or "length" in text.lower()):
        return "truncated pixel data"
    return text[:80]


def number(ds, keyword: str, default: int) -> int:
    """An integer header field (``default`` when absent or blank); DicomError naming a value that is no integer."""
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DicomError(f"{keyword} is not a whole number ({str(value)[:20]!r})") from None


def _first(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0]) if not isinstance(value, (str, bytes, int, float)) else float(value)
    except (TypeError, ValueError, IndexError):
        return None
