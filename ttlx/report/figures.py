"""The figures of a run dir: training curves and the confusion matrix (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def train_curves(rows: list[dict], path: str | Path) -> Path:
    """Loss (train, val), validation accuracy and AUROC, and the learning rate per epoch."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in rows], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in rows], label="validation")
    axes[0].set_title("loss")
    axes[0].legend()
    for ax, key, title in ((axes[1], "val_accuracy", "validation accuracy"),
                           (axes[2], "val_auroc", "validation AUROC (macro)")):
        ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker=".")
        ax.set_title(title)
    axes[3].plot(epochs, [r["lr"] for r in rows])
    axes[3].set_yscale("log")
    axes[3].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def confusion_matrix_figure(matrix: np.ndarray, classes, path: str | Path, title: str = "") -> Path:
    """Counts with the row-normalised rate as colour; rows are true classes."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
