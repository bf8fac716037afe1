"""Grad-CAM of a 3D network as slice montages: a few slices of each window with the heat map over each.

A window's map (``ttlx.analysis.gradcam.gradcam`` on NDHWC input) has one value per voxel; one PNG per
window shows ``slices`` evenly spaced slices of it (all of them for a shorter window, and always the slice
holding the map's peak), the CT slice above and the map over it below, titled with the slice's index in
its study.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttlx.analysis.gradcam import GradCAM, _class_name, _probabilities, _safe


def montage_slices(depth: int, peak: int, count: int = 8) -> list[int]:
    """``count`` evenly spaced slice indices of a window of ``depth`` slices, the ``peak`` slice among them."""
    chosen = {int(i) for i in np.linspace(0, depth - 1, min(count, depth)).round()}
    if peak not in chosen:  # the peak replaces the nearest evenly spaced slice
        chosen.remove(min(chosen, key=lambda i: abs(i - peak)))
        chosen.add(peak)
    return sorted(chosen)


def display_slices(windows: np.ndarray) -> np.ndarray:
    """Normalised windows [B, D, H, W, 1] back to [0, 1] grey ([B, D, H, W]): the HU window's scale."""
    from ttlx.data.augment3d import HU_MEAN

    return np.clip(np.asarray(windows, np.float32)[..., 0] + HU_MEAN, 0.0, 1.0)


def write_montages(windows: np.ndarray, cam: GradCAM, out_dir: str | Path, *, ids=None, starts=None,
                   classes=None, labels=None, slices: int = 8) -> list[Path]:
    """One PNG per window: ``slices`` slices in a row, each without and with the heat map over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shown = display_slices(windows)
    probs = _probabilities(cam.logits, False)
    paths = []
    for i in range(len(shown)):
        start = int(starts[i]) if starts is not None else 0
        peak = int(np.unravel_index(cam.maps[i].argmax(), cam.maps[i].shape)[0])
        chosen = montage_slices(shown.shape[1], peak, slices)
        fig, axes = plt.subplots(2, len(chosen), figsize=(1.5 * len(chosen) + 0.4, 3.6), squeeze=False)
        for column, index in enumerate(chosen):
            axes[0, column].imshow(shown[i, index], cmap="gray", vmin=0.0, vmax=1.0)
            axes[1, column].imshow(shown[i, index], cmap="gray", vmin=0.0, vmax=1.0)
            axes[1, column].imshow(cam.maps[i, index], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            axes[0, column].set_title(f"slice {start + index}" + (" (peak)" if index == peak else ""), fontsize=8)
            for ax in axes[:, column]:
                ax.axis("off")
        title = f"'{_class_name(cam.target[i], classes)}' (p={probs[i, cam.target[i]]:.2f})"
        if labels is not None:
            title += f"; window label '{_class_name(labels[i], classes)}'"
        where = f"{ids[i]}, slices {start}-{start + shown.shape[1] - 1}" if ids is not None else f"window {i}"
        fig.suptitle(f"Grad-CAM at {cam.layer} for {title}\n{where}", fontsize=9)
        fig.tight_layout()
        stem = f"{_safe(str(ids[i]))}_s{start}" if ids is not None else f"{i:03d}"
        path = out / f"gradcam_{i:03d}_{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
