"""Transforms of 3D windows (slices x height x width, int16 HU) into the network's float input.

As the PENet reference: every slice resized to ``image_size * 208 / 192`` pixels (area interpolation when
shrinking), cropped to ``image_size`` (at random in training, centred otherwise), flipped left-right with p =
0.5 and rotated by a whole number of degrees in -15..15 around the slice centre in training (the corners
filled with air, -1000 HU), then HU clipped to the window [-100, 900] (a dataset's ``intensity_window``),
scaled to [0, 1] and shifted by the reference's mean, -0.15897. The rotation interpolates bilinearly per slice
(the reference: a cubic spline over the window). Output: float32 (slices, size, size, 1), NDHWC without the
batch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ttlx.data.volumes import AIR_HU, HU_WINDOW  # HU_WINDOW: the reference's CONTRAST_HU_MIN, CONTRAST_HU_MAX

HU_MEAN = 0.15897  # the reference's mean voxel value after windowing (CONTRAST_HU_MEAN)
RESIZE_RATIO = 208 / 192  # PENet: slices resized to 208 and cropped to 192
MAX_ROTATION = 15  # degrees
FLIP_P = 0.5


def resized_size(image_size: int) -> int:
    return max(image_size, round(image_size * RESIZE_RATIO))


def normalize(hu: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """HU (any float or integer array) to the network's range: window [-100, 900] -> [0, 1], minus 0.15897."""
    low, high = window
    return (np.clip((np.asarray(hu, np.float32) - low) / (high - low), 0.0, 1.0) - HU_MEAN).astype(np.float32)


def resize_slices(window: np.ndarray, size: int) -> np.ndarray:
    """float32 (slices, size, size): area interpolation when shrinking, bilinear when enlarging."""
    depth, height, width = window.shape
    if (height, width) == (size, size):
        return np.asarray(window, np.float32)
    method = Image.BOX if size < max(height, width) else Image.BILINEAR
    out = np.empty((depth, size, size), np.float32)
    for k in range(depth):
        out[k] = np.asarray(Image.fromarray(np.asarray(window[k], np.float32), mode="F").resize((size, size), method))
    return out


def eval_window(window: np.ndarray, image_size: int, hu_window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Resize, centre crop, HU window: float32 (slices, image_size, image_size, 1)."""
    resized = resize_slices(window, resized_size(image_size))
    margin = resized.shape[1] - image_size
    top = margin // 2
    return normalize(resized[:, top:top + image_size, top:top + image_size], hu_window)[..., None]


def train_window(window: np.ndarray, image_size: int, rng: np.random.Generator, *, flip: bool = True,
                 rotate: bool = True, hu_window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Resize, random crop, flip, rotation, HU window: float32 (slices, image_size, image_size, 1)."""
    resized = resize_slices(window, resized_size(image_size))
    margin = resized.shape[1] - image_size
    top, left = (int(v) for v in rng.integers(0, margin + 1, size=2))
    out = resized[:, top:top + image_size, left:left + image_size]
    if flip and rng.random() < FLIP_P:
        out = out[:, :, ::-1]
    angle = int(rng.integers(-MAX_ROTATION, MAX_ROTATION + 1)) if rotate else 0
    if angle:
        out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(plane), mode="F").rotate(
            angle, resample=Image.BILINEAR, fillcolor=float(AIR_HU))) for plane in out])
    return normalize(out, hu_window)[..., None]
