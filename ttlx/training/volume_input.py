"""What training changes for volumes: the network and the data must both be 2D or both 3D, and the loaders
of a volume dataset take the window (slices per window) of the run."""

from __future__ import annotations

from typing import Any

from ttlx.errors import ConfigError

NETWORKS_2D = "resnet50, densenet201"
NETWORKS_3D = "penet, r3d_18"


def check_input_kind(arch, info, window: int | None = None) -> None:
    """One sentence when a 3D network meets 2D images, a 2D network meets volumes, or a 2D one gets a window."""
    volumes = bool(getattr(info, "volumetric", False))
    dims = int(getattr(arch, "spatial_dims", 2))
    if volumes and dims != 3:
        raise ConfigError(f"'{info.name}' holds 3D volumes and {arch.name} is a 2D network; choose a 3D --model "
                          f"({NETWORKS_3D}) or a dataset of images.")
    if not volumes and dims == 3:
        raise ConfigError(f"{arch.name} is a 3D network for volumes and '{info.name}' holds 2D images; choose a 2D "
                          f"--model ({NETWORKS_2D}) or a volume dataset (synthetic3d, penet, volumes).")
    if window is not None and dims != 3:
        raise ConfigError(f"--window sets the slices per window of a 3D network, and {arch.name} is a 2D network; "
                          "leave --window out.")


def loader_options(info, window: int | None) -> dict[str, Any]:
    """Extra ``make_loader`` arguments: the window for a volume dataset, none for images (so data sources
    that know only images keep working)."""
    return {"window": window} if getattr(info, "volumetric", False) else {}


def volume_record(info) -> dict[str, Any]:
    """What ``config.json``'s dataset record adds for volumes (ttlx eval then evaluates per study)."""
    return {"volumetric": True} if getattr(info, "volumetric", False) else {}
