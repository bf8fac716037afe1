"""The learning-rate schedule: torch's ReduceLROnPlateau (mode min), stepped once per epoch.

``optax.contrib.reduce_on_plateau`` counts patience one step differently from torch and is stepped per
update; this tracker reproduces ``torch.optim.lr_scheduler.ReduceLROnPlateau`` exactly (relative
threshold, no cooldown) and its value is written into ``optax.inject_hyperparams`` at each epoch end.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class PlateauTracker:
    """Halve (``factor``) the learning rate once the metric failed to improve for more than ``patience``
    epochs; improvement means ``metric < best * (1 - threshold)``, as in torch's 'rel' mode."""

    lr: float
    factor: float = 0.5
    patience: int = 5
    threshold: float = 1e-4
    min_lr: float = 0.0
    eps: float = 1e-8
    best: float = math.inf
    num_bad_epochs: int = 0
    num_reductions: int = 0

    def step(self, metric: float) -> float:
        """Record one epoch's metric and return the learning rate for the next epoch."""
        if metric < self.best * (1.0 - self.threshold):
            self.best = float(metric)
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.lr * self.factor, self.min_lr)
            if self.lr - new_lr > self.eps:  # torch skips reductions smaller than eps
                self.lr = new_lr
                self.num_reductions += 1
            self.num_bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state["best"] = None if math.isinf(self.best) else self.best  # JSON has no infinity
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PlateauTracker:
        state = dict(state)
        state["best"] = math.inf if state.get("best") is None else state["best"]
        return cls(**state)
