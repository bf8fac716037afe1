"""Grad-CAM (Selvaraju et al. 2017) at a kept unit of a ttlx network, and heat-map overlays as PNGs.

The forward pass is split at the unit: A = units[..k](x), logits = head(units[k+1..](A)). The class score's
gradient with respect to A, averaged over positions, weighs A's channels; the ReLU of the weighted sum,
upsampled to the image and scaled to [0, 1], is the map. The default unit is the last kept one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ttlx.errors import ConfigError


@dataclass(frozen=True)
class GradCAM:
    """Maps for a batch of images: ``maps`` [B, S, S] and ``coarse`` [B, h, w], both in [0, 1]; for windows
    of slices (NDHWC) ``maps`` [B, D, S, S] and ``coarse`` [B, d, h, w]."""

    maps: np.ndarray
    coarse: np.ndarray
    logits: np.ndarray  # [B, classes]
    target: np.ndarray  # [B] the class each map explains
    layer: str


def layer_index(model, layer: str | None) -> tuple[int, str]:
    """Position and name of ``layer`` among the model's units (None: the last kept unit)."""
    names = [name for name, _ in model.units()]
    if layer is None:
        return len(names) - 1, names[-1]
    if layer not in names:
        raise ConfigError(f"The model has no unit '{layer}'; choose one of: {', '.join(names)}.")
    return names.index(layer), layer


def _cam(graphdef, state, images, target, index: int):
    model = nnx.merge(graphdef, state)
    fns = [fn for _, fn in model.units()]
    acts = images
    for fn in fns[: index + 1]:
        acts = fn(acts)

    def score(acts):
        for fn in fns[index + 1 :]:
            acts = fn(acts)
        logits = model.apply_head(acts)
        chosen = jnp.where(target >= 0, target, jnp.argmax(logits, axis=-1))  # -1: the predicted class
        # Each image's score depends on its own activations only (eval mode), so one grad serves the batch.
        return jnp.sum(jnp.take_along_axis(logits, chosen[:, None], axis=1)), (logits, chosen)

    grads, (logits, chosen) = jax.grad(score, has_aux=True)(acts)
    spatial = tuple(range(1, acts.ndim - 1))  # (h, w) of an image, (d, h, w) of a window of slices
    weights = jnp.mean(grads.astype(jnp.float32), axis=spatial)  # [B, C]: the channel importances alpha_k^c
    cam = jax.nn.relu(jnp.einsum("b...c,bc->b...", acts.astype(jnp.float32), weights))
    size = images.shape[1:-1]
    full = jax.image.resize(cam, (cam.shape[0], *size), method="bilinear")
    return _unit_scale(cam), _unit_scale(full), logits, chosen


def _unit_scale(maps: jax.Array) -> jax.Array:
    peak = jnp.max(maps, axis=tuple(range(1, maps.ndim)), keepdims=True)
    return jnp.where(peak > 0, maps / jnp.where(peak > 0, peak, 1.0), 0.0)


_cam_jit = jax.jit(_cam, static_argnums=(0, 4))


def gradcam(model, images, *, layer: str | None = None, target=None, batch_size: int = 16) -> GradCAM:
    """Grad-CAM maps of ``images`` (float32 NHWC, or NDHWC windows; normalised) for ``target`` classes
    (default: predicted).

    ``target`` is one class index for all images or one per image. The model needs a head. Images go
    through in chunks of ``batch_size`` (the last one padded, so one compilation serves all).
    """
    if getattr(model, "head_mode", "pool") is None:
        raise ConfigError("Grad-CAM needs a model with a classifier head, not a feature map (head none).")
    index, name = layer_index(model, layer)
    images = np.asarray(images, np.float32)
    count = len(images)
    targets = np.full(count, -1, np.int32)  # -1: explain the predicted class
    if target is not None:
        targets = np.broadcast_to(np.asarray(target, np.int32), (count,))
    model.eval()
    graphdef, state = nnx.split(model)
    size = min(batch_size, count)
    parts = []
    for start in range(0, count, size):
        chunk = slice(start, start + size)
        out = _cam_jit(graphdef, state, jnp.asarray(_padded(images[chunk], size)),
                       jnp.asarray(_padded(targets[chunk], size)), index)
        parts.append([np.asarray(o)[: min(size, count - start)] for o in out])
    coarse, maps, logits, chosen = (np.concatenate(p) for p in zip(*parts, strict=True))
    return GradCAM(maps, coarse, logits, chosen, name)


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)]) if len(rows) < size else rows


def peak_position(maps: np.ndarray) -> np.ndarray:
    """[B, 2] (row, column) of each map's maximum; [B, 3] (slice, row, column) for windows."""
    flat = maps.reshape(maps.shape[0], -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, maps.shape[1:]), axis=1)


def denormalize(images: np.ndarray, convention: str = "imagenet") -> np.ndarray:
    """Normalised float NHWC (ImageNet's, or ``xrv``: [-1024, 1024]) back to [0, 1] RGB for display."""
    from ttlx.data.augment import IMAGENET_MEAN, IMAGENET_STD

    if convention == "xrv":
        return np.clip((np.asarray(images) + 1024.0) / 2048.0, 0.0, 1.0)
    return np.clip(np.asarray(images) * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)


def write_overlays(images: np.ndarray, cam: GradCAM, out_dir: str | Path, *, ids=None, classes=None,
                   labels=None, multilabel: bool = False, convention: str = "imagenet") -> list[Path]:
    """One PNG per image: the image, and the map over it; the title names the explained class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shown = denormalize(images, convention)
    probs = _probabilities(cam.logits, multilabel)
    paths = []
    for i in range(len(shown)):
        title = f"'{_class_name(cam.target[i], classes)}' (p={probs[i, cam.target[i]]:.2f})"
        if labels is not None and not multilabel:
            title += f"; label '{_class_name(labels[i], classes)}'"
        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
        axes[0].imshow(shown[i])
        axes[1].imshow(shown[i])
        axes[1].imshow(cam.maps[i], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"Grad-CAM at {cam.layer} for {title}", fontsize=9)
        fig.tight_layout()
        stem = _safe(str(ids[i])) if ids is not None else f"{i:03d}"
        path = out / f"gradcam_{i:03d}_{stem}.png" if ids is not None else out / f"gradcam_{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    if multilabel:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _class_name(index, classes) -> str:
    return str(classes[int(index)]) if classes is not None else f"class {int(index)}"


def _safe(text: str) -> str:
    """A file-name-safe rendering of a dataset id; ids can be paths, whose last 60 characters say the most."""
    path = Path(text)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        text = str(path.with_suffix(""))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-60:].strip("_")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm")
