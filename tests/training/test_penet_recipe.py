"""The PENet reference recipe's parts against the reference's formulas, written out in numpy."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from ttlx.training import recipes


def reference_binary_focal(logit: np.ndarray, target: np.ndarray, gamma: float = 2.0) -> float:
    """PENet's BinaryFocalLoss on one logit per example, as its code computes it (mean over the batch)."""
    max_val = np.clip(-logit, 0, None)
    bce = logit - logit * target + max_val + np.log(np.exp(-max_val) + np.exp(-logit - max_val))
    inv_probs = -np.log1p(np.exp(logit * (target * 2 - 1)))  # logsigmoid(-logit * (2t - 1))
    return float(np.mean(np.exp(inv_probs * gamma) * bce))


def test_focal_loss_over_two_classes_is_the_references_binary_focal_loss():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (16, 2)).astype(np.float32)
    labels = rng.integers(0, 2, 16).astype(np.int32)
    mask = np.ones(16, np.float32)
    mask[-3:] = 0  # padded examples do not count
    total, count = recipes.focal_loss_terms(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
    kept = slice(0, 13)
    expected = reference_binary_focal(logits[kept, 1] - logits[kept, 0], labels[kept].astype(np.float64))
    assert float(count) == 13
    assert float(total / count) == pytest.approx(expected, rel=1e-5)


def test_sgd_momentum_with_dampening_as_torch_steps_it():
    grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
    tx = recipes.sgd_dampened()
    state = tx.init(jnp.zeros(2))
    buffer = None
    for g in grads:
        update, state = tx.update(jnp.asarray(g), state)
        buffer = g if buffer is None else 0.9 * buffer + (1 - 0.9) * g  # torch.optim.SGD, dampening 0.9
        np.testing.assert_allclose(update, buffer, rtol=1e-6)


def test_warmup_then_cosine_as_the_reference_writes_it():
    total = 600
    factor = recipes.warmup_cosine(total)
    warmup = 10  # 1/60 of the steps, as 10,000 of 600,000
    for step in (0, 5, 10, 11, 300, 599, 600, 700):
        if step < warmup:
            expected = step / warmup
        elif step < total:
            expected = (1 + math.cos(math.pi * (step - warmup) / total)) / 2
        else:
            expected = 0.0
        assert float(factor(step)) == pytest.approx(expected, abs=1e-6), step


def test_penet_sgd_scales_the_buffer_by_the_rate_and_the_schedule():
    tx = recipes.penet_sgd(0.01, 1e-3, total_steps=600)
    params = jnp.array([2.0, -1.0])
    state = tx.init(params)
    update, state = tx.update(jnp.array([1.0, 1.0]), state, params)  # step 0 of the warmup: factor 0
    np.testing.assert_array_equal(update, [0.0, 0.0])
    update, _ = tx.update(jnp.array([1.0, 1.0]), state, params)
    buffer = 0.9 * (np.array([1.0, 1.0]) + 1e-3 * np.array([2.0, -1.0])) + 0.1 * (1 + 1e-3 * np.array([2.0, -1.0]))
    np.testing.assert_allclose(update, -0.01 * (1 / 10) * buffer, rtol=1e-6)
