"""``digits``: scikit-learn's bundled 1,797 handwritten digits (8x8), the default that needs no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.data.spec import Catalog, DatasetSpec, Example


class Digits(DatasetSpec):
    name = "digits"
    aliases = ("sklearn-digits",)
    description = "scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes; bundled, no download"
    channels = 1
    encoding = "png"  # lossless: JPEG would smear 8x8 images
    needs_manual_dir = False
    max_size = 0

    def scan(self, manual_dir: Path | None = None) -> Catalog:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # Pixel values are 0..16; scale to the full 8-bit range.
        images = np.clip(bunch.images * 16.0, 0, 255).astype(np.uint8)
        examples = [
            Example(id=f"digit_{i:04d}", label=int(label), image=image)
            for i, (image, label) in enumerate(zip(images, bunch.target, strict=True))
        ]
        return Catalog(tuple(str(d) for d in range(10)), examples)


DIGITS = Digits()
