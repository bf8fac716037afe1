"""Turning a source image into the bounded, re-encoded bytes that a prepared dataset stores."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WHITE = 255
JPEG_MAX_SIDE = 65500  # libjpeg cannot write a wider or taller image


class BadImage(Exception):
    """An image that cannot be decoded (corrupt, truncated, not an image); the message says why."""


def open_source(source, *, shorter_at_least: int = 0, pad_square: bool = False) -> Image.Image:
    """A loaded PIL image from a path, encoded bytes, a uint8 array or a function returning an array.

    The format comes from the content, not the file name (a PNG named ``.jpg`` loads); DICOM files (a ``.dcm``
    name or the DICM magic) go through :func:`ttlx.data.dicom.read_image` (rescale, VOI LUT or window,
    MONOCHROME1 inverted, compressed syntaxes through pydicom's decoders). Anything that
    cannot be decoded raises BadImage with a short reason, including images over PIL's pixel limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, a guard against decompression bombs): those are refused from
    their header and never decoded. ``shorter_at_least`` lets a JPEG decode at a reduced scale (draft
    mode) as long as the stored image (after padding to a square when ``pad_square``) keeps at least
    that many pixels.
    """
    if callable(source) and not isinstance(source, np.ndarray):
        source = source()
    if isinstance(source, np.ndarray):
        return Image.fromarray(_as_uint8(source))
    if isinstance(source, (Path, bytes)) and _is_dicom(source):
        return _dicom_image(source)
    image = None
    try:
        image = Image.open(source if isinstance(source, Path) else io.BytesIO(source))
        _refuse_too_large(image.width * image.height)
        if shorter_at_least and image.format == "JPEG":
            _draft(image, shorter_at_least, pad_square)
        image.load()  # decode now: truncated files fail here, not later in training
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # the warning when it is an error
        _close(image)
        raise BadImage(_too_large(_pixels_in(err))) from None
    except BadImage:
        _close(image)
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error) as err:
        _close(image)
        raise BadImage(_reason(err, source)) from None
    return image


def stored_image(image: Image.Image, *, channels: int, max_size: int, pad_square: bool) -> Image.Image:
    """Convert to L or RGB, optionally pad to a white square, and shrink the shorter side to max_size."""
    image = ImageOps.exif_transpose(image)
    image = to_mode(image, "L" if channels == 1 else "RGB")
    if pad_square:
        image = pad_to_square(image)
    shorter = min(image.size)
    if max_size and shorter > max_size:
        scale = max_size / shorter
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR, reducing_gap=3.0)
    return image


def encode(image: Image.Image, encoding: str) -> bytes:
    """The stored bytes (JPEG at quality 95, or PNG); BadImage for an image the encoder cannot write (a
    side over 65,500 pixels in JPEG, as a corrupt header can claim)."""
    if encoding == "jpeg" and max(image.size) > JPEG_MAX_SIDE:
        raise BadImage(f"{image.width}x{image.height} pixels, too large to store as JPEG (at most {JPEG_MAX_SIDE} "
                       "per side): a corrupt header, or an image to crop before preparing")
    buffer = io.BytesIO()
    try:
        if encoding == "jpeg":
            image.save(buffer, format="JPEG", quality=95)
        else:
            image.save(buffer, format="PNG", compress_level=1)
    except OSError as err:
        raise BadImage(f"could not be stored ({str(err)[:80]})") from None
    return buffer.getvalue()


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Grayscale (L) or RGB, the same way for every image of a dataset.

    - 16-bit grayscale (``I;16``, common for x-rays), 32-bit integer (``I``) and float (``F``) images are
      scaled linearly so that 0 stays 0 and the image's brightest pixel becomes 255 (65535 -> 255 and
      32768 -> 128 in a full-range image; a 12-bit image's 4095 -> 255 too). PIL's own conversion
      would clip everything above 255 to white, and a fixed /257 would leave 10- and 12-bit images
      nearly black. Negative, NaN and infinite values become 0.
    - Transparency (RGBA, LA, PA, or a palette with a transparent colour) is composited over white, then
      the alpha channel dropped: a fully transparent pixel is stored white, never its hidden colour.
    - Every other mode (CMYK, YCbCr, LAB, palette, 1-bit) goes through PIL's ``convert``, by way of RGB
      where PIL has no direct conversion; a mode PIL cannot convert at all raises BadImage.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64), posinf=0.0), 0, None)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image)
    if image.mode == mode:
        return image
    try:
        return image.convert(mode)
    except ValueError:  # PIL converts some modes only to RGB (LAB -> L fails)
        pass
    try:
        return image.convert("RGB").convert(mode)
    except ValueError:
        raise BadImage(f"unsupported colour mode {image.mode}") from None


def pad_to_square(image: Image.Image) -> Image.Image:
    """Centre the image on a white square as wide as its longer side (the reference's HAM10000 input)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    fill = WHITE if image.mode == "L" else (WHITE, WHITE, WHITE)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _draft(image: Image.Image, shorter_at_least: int, pad_square: bool) -> None:
    width, height = image.size
    shorter = max(width, height) if pad_square else min(width, height)
    if shorter > shorter_at_least:
        scale = shorter_at_least / shorter
        image.draft(image.mode, (int(np.ceil(width * scale)), int(np.ceil(height * scale))))


def _flatten_alpha(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (WHITE, WHITE, WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _refuse_too_large(pixels: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and pixels > limit:
        raise BadImage(_too_large(pixels))


def _too_large(pixels: int | None) -> str:
    size = f"{pixels} pixels" if pixels else "its header claims more pixels"
    return f"too large: {size}, over PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS}"


def _pixels_in(err: Exception) -> int | None:
    found = re.search(r"\((\d+) pixels\)", str(err))
    return int(found[1]) if found else None


def _is_dicom(source: Path | bytes) -> bool:
    from ttlx.data import dicom

    return dicom.is_dicom(source)


def _dicom_image(source: Path | bytes) -> Image.Image:
    from ttlx.data import dicom

    try:
        array = dicom.read_image(source, max_pixels=Image.MAX_IMAGE_PIXELS)
    except dicom.TooLarge as err:
        raise BadImage(_too_large(err.pixels)) from None
    except dicom.DicomError as err:
        if isinstance(source, Path) and source.is_file() and source.stat().st_size == 0:
            raise BadImage("empty file") from None
        raise BadImage(str(err)) from None
    _refuse_too_large(array.shape[0] * array.shape[1])
    return Image.fromarray(array)


def _close(image: Image.Image | None) -> None:
    if image is not None:
        image.close()


def _reason(err: Exception, source) -> str:
    if isinstance(source, Path) and source.is_file() and source.stat().st_size == 0:
        return "empty file"
    if not isinstance(err, (OSError, SyntaxError, ValueError)):  # PIL tripping over a damaged header
        return "corrupt or unsupported"
    text = str(err) or type(err).__name__
    if "truncated" in text.lower():
        return "truncated"
    if "cannot identify image file" in text:
        return "not an image or corrupt"
    return text.split(" (")[0][:80]
