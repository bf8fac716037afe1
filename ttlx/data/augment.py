"""Image transforms of the training recipe as small factories: encoded bytes in, uint8 RGB arrays out."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)
# how uint8 levels become the network's input: the convention of the pretrained source (config.json "source")
INPUT_CONVENTIONS = ("imagenet", "xrv")
EVAL_RESIZE_RATIO = 256 / 224  # eval resizes to 256 before a 224 centre crop, for any size

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> Box:
    """torchvision's RandomResizedCrop box: area fraction in ``scale``, aspect in ``ratio`` (log-uniform)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return (left, top, left + w, top + h)
    return _central_fallback(width, height, ratio)


def _central_fallback(width: int, height: int, ratio) -> Box:
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return (left, top, left + w, top + h)


def resize_shorter(width: int, height: int, shorter: int) -> tuple[int, int]:
    """torchvision Resize(int): the shorter side becomes ``shorter``, the longer keeps the aspect."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """Left and top of torchvision's CenterCrop(size)."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def draft(image: Image.Image, need: tuple[int, int]) -> Image.Image:
    """Let a not yet loaded JPEG decode at the smallest DCT scale that still gives ``need`` pixels."""
    if image.format == "JPEG" and need[0] < image.width and need[1] < image.height:
        image.draft(image.mode, (max(1, need[0]), max(1, need[1])))
    return image


def load_rows(image: Image.Image, rows: int) -> Image.Image:
    """Decode only the first ``rows`` rows of a not yet loaded baseline JPEG; the image becomes that tall.

    A JPEG is stored top to bottom, so a crop that ends above the last row does not need the rows below
    it. PIL has no public call for this: the decoder is given a shorter tile and stops there, and libjpeg
    then reports the scanlines it was not asked for as a broken stream (the rows it wrote are exactly
    those of a full decode). Any image this cannot apply to (not a single-tile JPEG, or ``rows`` not
    above 0 and under its height) is loaded whole, unchanged. Meant for images ttlx encoded itself (the
    prepared records, which were fully decoded when they were written): a broken stream above ``rows``
    would not be noticed.
    """
    tiles = image.tile
    if not (0 < rows < image.height and len(tiles) == 1 and tiles[0][0] == "jpeg" and image.format == "JPEG"):
        image.load()
        return image
    tile = tiles[0]
    extents = (*tile[1][:3], tile[1][1] + rows)
    image.tile = [tile._replace(extents=extents) if hasattr(tile, "_replace") else (tile[0], extents, *tile[2:])]
    image._size = (image.width, rows)
    try:
        image.load()
    except OSError as err:  # libjpeg's "too few scanlines read", once the shortened tile is filled
        if not str(err).startswith("broken data stream") or image._im is None:
            raise
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """uint8 HxWx3; grayscale is repeated over the three channels after resizing (three times cheaper)."""
    if image.mode == "L":
        return np.repeat(np.asarray(image)[:, :, None], 3, axis=2)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def train_transform(
    size: int, scale=(0.08, 1.0), flip: bool = True
) -> Callable[[bytes, np.random.Generator], np.ndarray]:
    """RandomResizedCrop(size, scale) + horizontal flip, bilinear as torchvision."""

    def apply(data: bytes, rng: np.random.Generator) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        full = image.size
        left, top, right, bottom = random_resized_crop_box(*full, rng, scale=scale)
        need = (math.ceil(full[0] * size / (right - left)), math.ceil(full[1] * size / (bottom - top)))
        image = draft(image, need)
        sx, sy = image.width / full[0], image.height / full[1]  # draft may have shrunk the image
        box = (left * sx, top * sy, right * sx, bottom * sy)
        if image.width >= image.height and image.width >= size:
            # PIL's bilinear filter reads up to max(1, downscale) rows past the box: those (and one more)
            # are decoded and the rows below cannot change an output pixel. Only images at least as wide
            # as tall are cut: Pillow 13 runs the vertical pass first when an image is to shrink much
            # more in height than in width, judged on the whole image (python-pillow/Pillow#9549), so a
            # shorter portrait image could change the pass order and with it the rounding.
            support = max(1.0, (box[3] - box[1]) / size)
            try:
                load_rows(image, math.ceil(box[3] + support) + 1)
            except Exception:  # load_rows leans on PIL internals: if they change, decode the whole image
                image = draft(Image.open(io.BytesIO(data)), need)
                image.load()
        image = image.resize((size, size), Image.BILINEAR, box=box)
        if flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # PIL's mirror: 5x faster than numpy's copy
        return to_rgb_array(image)

    return apply


def eval_transform(size: int) -> Callable[[bytes], np.ndarray]:
    """Resize the shorter side to size*256/224, then CenterCrop(size)."""
    resize_to = int(round(size * EVAL_RESIZE_RATIO))

    def apply(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        target = resize_shorter(*image.size, resize_to)
        image = draft(image, target)
        image = image.resize(target, Image.BILINEAR)
        left, top = center_crop_offsets(*target, size)
        return np.ascontiguousarray(to_rgb_array(image)[top : top + size, left : left + size])

    return apply


# (x / 255 - mean) / std is computed as x / (255 std) - mean / std, two correctly rounded float32 operations.
_DIVISOR = (255.0 * IMAGENET_STD).astype(np.float32)
_OFFSET = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
_CHUNK_VALUES = 1 << 17  # values per vectorised pass (about one 224 x 224 image): stays in the cache


def normalize(batch: np.ndarray, convention: str = "imagenet") -> np.ndarray:
    """uint8 NHWC to float32 ImageNet-normalised NHWC: (x / 255 - mean) / std per channel.

    ``convention="xrv"`` (chest-X-ray sources, see :data:`INPUT_CONVENTIONS`) gives torchxrayvision's scaling
    instead, the same for every channel: (2 x / 255 - 1) * 1024, in [-1024, 1024], no mean/std.

    Each value is float32(float32(x / float32(255 std)) - float32(mean / std)), the same two roundings
    for every x, so the result equals a per-level table of that formula bit for bit. The constants are
    tiled along a whole image row: numpy then runs its vector loop over rows instead of over 3 channels.
    """
    batch = np.asarray(batch)
    if convention != "imagenet":
        return normalize_table(convention)[batch.astype(np.intp), np.arange(batch.shape[-1])]
    out = np.empty(batch.shape, np.float32)
    if batch.size == 0:
        return out
    row = batch.shape[-2] * 3 if batch.ndim >= 2 else 3
    values, results = batch.reshape(-1, row), out.reshape(-1, row)
    divisor, offset = np.tile(_DIVISOR, row // 3), np.tile(_OFFSET, row // 3)
    step = max(1, _CHUNK_VALUES // row)
    for start in range(0, values.shape[0], step):
        chunk = results[start : start + step]
        np.divide(values[start : start + step], divisor, out=chunk)
        np.subtract(chunk, offset, out=chunk)
    return out


def normalize_table(convention: str = "imagenet") -> np.ndarray:
    """[256, 3] float32: :func:`normalize` of every uint8 level in each channel, the table a device looks the
    levels up in (``ttlx.training.steps.model_input``) to get the host's values bit for bit."""
    if convention not in INPUT_CONVENTIONS:
        raise ValueError(f"unknown input convention {convention!r}; choose {', '.join(INPUT_CONVENTIONS)}")
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    if convention == "xrv":  # torchxrayvision's datasets.normalize(img, 255), in float32 as it computes it
        return (np.float32(2) * (levels.astype(np.float32) / np.float32(255)) - np.float32(1)) * np.float32(1024)
    return normalize(levels[None])[0]
