"""``synthetic``: a deterministic generator of medical-looking images for demos, tests and benchmarks.

Every image has a tissue-like background (smoothed noise, a stain tint, vignetting). Its class is set
by low/mid-level content only: ``spots`` adds small bright nodules, ``streaks`` an oriented fibrous
texture, ``haze`` a large soft opacity. Image i depends only on (i, size), never on the count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ttlx.data.spec import Catalog, DatasetSpec, Example
from ttlx.errors import ConfigError

CLASSES = ("spots", "streaks", "haze")
IMAGES_PER_PATIENT = 2  # pairs of images share a group, so splits have groups to keep together


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Noise in [0, 1] with features about size/cells pixels wide (bicubic upsampling of a small grid)."""
    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def _coordinates(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(axis, axis, indexing="xy")


def _spots(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coordinates(size)
    out = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(6, 14))):
        cx, cy, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.015, 0.04)
        out += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    return np.clip(out, 0, 1)


def _streaks(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coordinates(size)
    angle, frequency = rng.uniform(0, np.pi), rng.uniform(10, 18)
    along = x * np.cos(angle) + y * np.sin(angle)
    wobble = 0.6 * smooth_noise(rng, size, 4)
    return 0.5 + 0.5 * np.sin(2 * np.pi * frequency * along + 4 * wobble)


def _haze(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coordinates(size)
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    sx, sy = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3)
    return np.exp(-((x - cx) ** 2) / (2 * sx**2) - ((y - cy) ** 2) / (2 * sy**2))


PATTERNS = (_spots, _streaks, _haze)


def synthetic_image(index: int, size: int) -> tuple[np.ndarray, int]:
    """(uint8 size x size x 3 image, class index) of example ``index``; the same for every call."""
    rng = np.random.default_rng([20240607, index, size])
    label = index % len(CLASSES)
    background = 0.6 * smooth_noise(rng, size, 6) + 0.25 * smooth_noise(rng, size, max(2, size // 4))
    pattern = PATTERNS[label](rng, size)
    x, y = _coordinates(size)
    vignette = 1.0 - 0.35 * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2
    intensity = np.clip((0.35 * background + 0.45 * pattern + 0.1 * rng.random((size, size))) * vignette, 0, 1)
    tint = rng.uniform([0.75, 0.45, 0.55], [1.0, 0.7, 0.85])  # a stain-like colour per image
    image = 255 * (0.15 + 0.85 * intensity[..., None] * tint)
    return np.clip(image, 0, 255).astype(np.uint8), label


class Synthetic(DatasetSpec):
    name = "synthetic"
    aliases = ("synth", "fake")
    description = "generated medical-looking images (spots, streaks, haze), any --count and --size"
    needs_manual_dir = False
    max_size = 0  # keep the generated size
    options = {"count": 600, "size": 64}

    def scan(self, manual_dir: Path | None = None, count: int = 600, size: int = 64) -> Catalog:
        if count < 10 * len(CLASSES) or size < 8:
            raise ConfigError(f"synthetic needs --count of at least {10 * len(CLASSES)} and --size of at least 8.")
        examples = [
            Example(
                id=f"synthetic_{i:06d}",
                label=i % len(CLASSES),
                image=_Generate(i, size),
                group=f"patient_{i // IMAGES_PER_PATIENT:06d}",
            )
            for i in range(count)
        ]
        return Catalog(CLASSES, examples)


class _Generate:
    """A deferred image: generated on a builder thread, not held in memory for the whole dataset."""

    def __init__(self, index: int, size: int):
        self.index, self.size = index, size

    def __call__(self) -> np.ndarray:
        return synthetic_image(self.index, self.size)[0]


SYNTHETIC = Synthetic()
