"""Image transforms of the training recipe as small factories: encoded bytes in, uint8 RGB arrays out."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)
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
        array = to_rgb_array(image.resize((size, size), Image.BILINEAR, box=box))
        if flip and rng.random() < 0.5:
            array = array[:, ::-1]
        return np.ascontiguousarray(array)

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


# Normalised value of every uint8 level per channel: a table lookup is twice as fast as the arithmetic.
_LEVELS = np.arange(256, dtype=np.float32)[:, None] / (255.0 * IMAGENET_STD) - IMAGENET_MEAN / IMAGENET_STD


def normalize(batch: np.ndarray) -> np.ndarray:
    """uint8 NHWC to float32 ImageNet-normalised NHWC: (x / 255 - mean) / std per channel."""
    out = np.empty(batch.shape, np.float32)
    for channel in range(3):
        out[..., channel] = _LEVELS[:, channel][batch[..., channel]]
    return out
