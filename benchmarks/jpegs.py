"""Synthetic dermoscopy-sized JPEGs for the input-pipeline benchmark (no download, same files for both sides)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("a", "b")


def synthetic_photo(index: int, width: int, height: int) -> Image.Image:
    """A smooth, tinted texture with fine noise: decodes like a photograph rather than a flat test card."""
    rng = np.random.default_rng([7, index])
    layers = []
    for cells in (4, 16, 64):  # coarse shapes, mid-level texture, fine detail
        grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
        layers.append(np.asarray(grid.resize((width, height), Image.BICUBIC), np.float32) / 255)
    intensity = 0.55 * layers[0] + 0.3 * layers[1] + 0.15 * layers[2]
    intensity += rng.normal(0, 0.03, intensity.shape).astype(np.float32)
    tint = rng.uniform([0.75, 0.45, 0.5], [1.0, 0.75, 0.85]).astype(np.float32)
    pixels = np.clip(255 * (0.1 + 0.9 * intensity[..., None] * tint), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def write_jpegs(folder: Path, count: int, width: int = 600, height: int = 450, quality: int = 95) -> dict:
    """Write ``count`` JPEGs into ``folder/<class>/`` (classes alternate); returns a short description."""
    total = 0
    for index in range(count):
        target = folder / CLASSES[index % len(CLASSES)]
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"img_{index:05d}.jpg"
        synthetic_photo(index, width, height).save(path, format="JPEG", quality=quality)
        total += path.stat().st_size
    return {"count": count, "width": width, "height": height, "quality": quality,
            "mean_kib": round(total / max(count, 1) / 1024, 1)}
