"""``synthetic3d``: generated CT-like volumes with a learnable finding, for the 3D quick start and the tests.

Each study is a chest-like phantom in Hounsfield units: air outside (-1000), a soft-tissue body (~40 HU with
noise), two lungs (~-850), a contrast-filled aorta (~300) and a spine (~700). Half the studies are
``positive``: a dense nodule (~200 HU, a few voxels wide) sits in one lung across a run of slices, whose
0-based indices are the study's positive slices (as PENet's ``pe_idxs``). Study i depends only on
(i, slices, size), never on the count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.data.spec import Catalog, DatasetSpec, Example
from ttlx.data.volumes import Volume
from ttlx.errors import ConfigError

CLASSES = ("negative", "positive")
SPACING = (2.5, 1.5, 1.5)  # mm between slices, rows, columns


def synthetic_volume(index: int, slices: int, size: int) -> Volume:
    """The study ``index``: an int16 (slices, size, size) HU volume; odd indices hold the finding."""
    rng = np.random.default_rng([20261207, index, slices, size])
    z, y, x = np.meshgrid(np.linspace(-1, 1, slices), np.linspace(-1, 1, size), np.linspace(-1, 1, size),
                          indexing="ij")
    hu = np.full((slices, size, size), -1000.0, np.float32)
    body = (x / rng.uniform(0.85, 0.95)) ** 2 + (y / rng.uniform(0.65, 0.75)) ** 2 <= 1
    hu[body] = 40.0
    for side in (-1, 1):
        lung = ((x - side * 0.42) / 0.3) ** 2 + ((y + 0.05) / 0.45) ** 2 <= 1 - 0.15 * z**2
        hu[lung] = -850.0
    hu[(x / 0.12) ** 2 + ((y + 0.05) / 0.12) ** 2 <= 1] = 300.0  # aorta
    hu[(x / 0.12) ** 2 + ((y - 0.5) / 0.1) ** 2 <= 1] = 700.0  # spine
    hu += rng.normal(0.0, 25.0, hu.shape).astype(np.float32)
    positives: tuple[int, ...] = ()
    if index % 2:
        side = rng.choice((-1, 1))
        cx, cy = side * rng.uniform(0.32, 0.52), rng.uniform(-0.3, 0.2)
        cz = rng.uniform(-0.5, 0.5)
        radius = rng.uniform(0.12, 0.18)
        half = rng.uniform(0.25, 0.4)  # half its extent along the slices, in the same [-1, 1] units
        nodule = ((x - cx) / radius) ** 2 + ((y - cy) / radius) ** 2 + ((z - cz) / half) ** 2 <= 1
        hu[nodule] = 200.0 + rng.normal(0.0, 25.0, int(nodule.sum()))
        positives = tuple(int(k) for k in np.flatnonzero(nodule.any(axis=(1, 2))))
    return Volume(np.clip(np.rint(hu), -1024, 3071).astype(np.int16), SPACING, positives)


class Synthetic3D(DatasetSpec):
    name = "synthetic3d"
    aliases = ("synth3d",)
    description = "generated CT-like volumes, half with a nodule across a run of slices; any --count, --slices, --size"
    volumetric = True
    channels = 1
    encoding = "int16"
    needs_manual_dir = False
    max_size = 0  # keep the generated size
    options = {"count": 80, "slices": 24, "size": 32}  # small enough for the 3D quick start on 2 CPU cores

    def scan(self, manual_dir: Path | None = None, count: int = 80, slices: int = 24, size: int = 32) -> Catalog:
        if count < 20 or slices < 4 or size < 16:
            raise ConfigError("synthetic3d needs --count of at least 20, --slices of at least 4 and --size of at "
                              "least 16.")
        examples = [Example(id=f"study_{i:05d}", label=i % 2, image=_Generate(i, slices, size)) for i in range(count)]
        return Catalog(CLASSES, examples)


class _Generate:
    """A deferred volume: generated on a builder thread, not held in memory for the whole dataset."""

    def __init__(self, index: int, slices: int, size: int):
        self.index, self.slices, self.size = index, slices, size

    def __call__(self) -> Volume:
        return synthetic_volume(self.index, self.slices, self.size)


SYNTHETIC3D = Synthetic3D()
