"""The six 3D MedMNIST datasets (MedMNIST v2 ``<name>3d.npz``, MedMNIST+ ``<name>3d_64.npz``) as volume datasets.

A release file holds ``<split>_images`` of shape (N, 28, 28, 28) (or 64 per side) as uint8 and
``<split>_labels`` of shape (N, 1). Each volume is stored as it is (the uint8 values as int16, the first axis
as slices, spacing unrecorded: 1 mm) through ttlx's volume store, and the official train/val/test split is used
by every repeat. The loader scales the stored 0..255 to [0, 1] (``intensity_window``), not a CT
window. Class names and counts are those of MedMNIST's ``INFO``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.errors import ConfigError, DataError

from . import MedMnist

SIZES_3D = (28, 64)


class MedMnist3D(MedMnist):
    """One 3D MedMNIST dataset read from its release file; every study is a small volume."""

    volumetric = True
    channels = 1
    encoding = "int16"
    max_size = 0
    intensity_window = (0.0, 255.0)  # uint8 voxels, not Hounsfield units: the loader scales 0..255 to [0, 1]

    def __init__(self, name: str, title: str, classes: tuple[str, ...]):
        super().__init__(name, title, classes, 1)
        self.description = f"MedMNIST {title} ({len(classes)} classes, 3D volumes, official splits; ttlx-medmnist)"

    def release_file(self, manual_dir: Path | None, size: int) -> Path:
        if size not in SIZES_3D:
            raise ConfigError(f"--size for {self.name} must be one of {', '.join(map(str, SIZES_3D))}, got {size}.")
        return super().release_file(manual_dir, size)

    def _checked_images(self, volumes: np.ndarray, split: str, path: Path) -> np.ndarray:
        if volumes.ndim == 5 and volumes.shape[-1] == 1:
            volumes = volumes[..., 0]
        if volumes.ndim != 4:
            raise DataError(f"{path} has {split} images of shape {volumes.shape}, not (N, depth, height, "
                            f"width): it is not a 3D MedMNIST file; is it the 2D set?")
        return volumes


ORGANS_3D = ("liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart", "lung-right",
             "lung-left", "spleen", "pancreas")  # MedMNIST's label order for OrganMNIST3D (not the 2D sets')
ORGANMNIST3D = MedMnist3D("organmnist3d", "OrganMNIST3D", ORGANS_3D)
NODULEMNIST3D = MedMnist3D("nodulemnist3d", "NoduleMNIST3D", ("benign", "malignant"))
ADRENALMNIST3D = MedMnist3D("adrenalmnist3d", "AdrenalMNIST3D", ("normal", "hyperplasia"))
FRACTUREMNIST3D = MedMnist3D("fracturemnist3d", "FractureMNIST3D", ("buckle rib fracture",
                             "nondisplaced rib fracture", "displaced rib fracture"))  # fmt: skip
VESSELMNIST3D = MedMnist3D("vesselmnist3d", "VesselMNIST3D", ("vessel", "aneurysm"))
SYNAPSEMNIST3D = MedMnist3D("synapsemnist3d", "SynapseMNIST3D", ("inhibitory synapse", "excitatory synapse"))
VOLUME_SETS = (ORGANMNIST3D, NODULEMNIST3D, ADRENALMNIST3D, FRACTUREMNIST3D, VESSELMNIST3D, SYNAPSEMNIST3D)
