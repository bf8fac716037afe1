"""Losses on logits, as sums so that batches and devices combine into torch's weighted means.

Each function returns ``(numerator, denominator)``; the loss is their ratio. For a single batch this is
``torch.nn.CrossEntropyLoss(weight=w)`` (``sum w_i l_i / sum w_i``) or ``BCEWithLogitsLoss(pos_weight=p)``
(mean over entries); over a whole validation set it is the same weighted mean taken over every example,
with padded examples (``mask`` 0) left out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: jax.Array,
                           mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Class-weighted softmax cross-entropy: integer ``labels`` [B], ``class_weights`` [C], ``mask`` [B]."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    weights = class_weights[labels] * mask
    return jnp.sum(weights * nll), jnp.sum(weights)


def weighted_binary_cross_entropy(logits: jax.Array, labels: jax.Array, pos_weight: jax.Array,
                                  mask: jax.Array, label_mask: jax.Array | None = None
                                  ) -> tuple[jax.Array, jax.Array]:
    """Multi-label BCE with ``pos_weight`` [C] on the positive term; ``label_mask`` [B, C] drops entries."""
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    # -[p y log s(x) + (1 - y) log(1 - s(x))], with log s(x) = -softplus(-x), log(1 - s(x)) = -softplus(x)
    loss = pos_weight * labels * jax.nn.softplus(-logits) + (1.0 - labels) * jax.nn.softplus(logits)
    entries = mask[:, None] * (jnp.ones_like(loss) if label_mask is None else label_mask)
    return jnp.sum(loss * entries), jnp.sum(entries)


def batch_loss_terms(logits: jax.Array, batch: dict, class_weights: jax.Array,
                     multilabel: bool, focal: bool = False) -> tuple[jax.Array, jax.Array]:
    """The (numerator, denominator) of the run's loss for one batch of the data pipeline (``focal``: the PENet
    recipe's focal loss, ``ttlx.training.recipes``)."""
    if focal and not multilabel:
        from ttlx.training.recipes import focal_loss_terms

        return focal_loss_terms(logits, batch["label"], batch["mask"])
    if multilabel:
        return weighted_binary_cross_entropy(logits, batch["label"], class_weights, batch["mask"],
                                             batch.get("label_mask"))
    return weighted_cross_entropy(logits, batch["label"], class_weights, batch["mask"])
