"""Training targets from stored labels (CheXpert's uncertainty policies) and class weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")  # U-ones (the reference), U-zeros, U-ignore (masked)


@dataclass(frozen=True)
class LabelPolicy:
    """How a stored label becomes a target: a class index, or multi-hot with the uncertainty policy."""

    multilabel: bool
    uncertain: str = "ones"

    @classmethod
    def of(cls, prepared) -> LabelPolicy:
        options = prepared.meta.get("settings", {}).get("options", {})
        return cls(prepared.multilabel, options.get("uncertain", "ones"))

    def targets(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(multi-hot float32, mask float32) for raw values 1 / 0 / -1 (uncertain), any leading shape."""
        raw = np.asarray(raw)
        positive = raw == 1
        if self.uncertain == "ones":
            positive = positive | (raw == -1)
        mask = raw != -1 if self.uncertain == "ignore" else np.ones(raw.shape, bool)
        return positive.astype(np.float32), mask.astype(np.float32)

    def target(self, raw) -> dict:
        if not self.multilabel:
            return {"label": np.int32(raw)}
        label, mask = self.targets(raw)
        return {"label": label, "label_mask": mask}


def class_weights_from(labels: np.ndarray, num_classes: int, policy: LabelPolicy) -> np.ndarray:
    """Single-label: count(most frequent class) / count(class), 0 for a class absent from training.

    Multi-label: BCE pos_weight = negatives / positives per finding (1 where a finding has no positive).
    Only relative sizes matter for a weighted mean, so the most frequent class gets 1 (BIMCV: [1.483, 1]).
    """
    if policy.multilabel:
        target, mask = policy.targets(labels)
        positives = (target * mask).sum(axis=0)
        negatives = ((1 - target) * mask).sum(axis=0)
        return np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0).astype(np.float32)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0).astype(np.float32)
