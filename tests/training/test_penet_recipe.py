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


def test_the_recipe_is_a_checked_option_that_names_the_run():
    from ttlx.config import TrainConfig
    from ttlx.errors import ConfigError
    from ttlx.runs.run_dir import run_name

    with pytest.raises(ConfigError, match="--recipe must be one of paper, penet"):
        TrainConfig(recipe="sgd")
    cfg = TrainConfig(model="penet", recipe="penet", stochastic_depth=False)
    from ttlx.config import ModelConfig

    assert run_name(cfg, ModelConfig(arch="penet")).endswith("_penet_nosd")


def test_penet_optimizer_takes_its_length_as_an_injected_hyperparameter():
    import jax

    from ttlx.training.losses import batch_loss_terms
    from ttlx.training.optim import make_optimizer, with_hyperparameter

    params = {"fc": jnp.ones(3), "conv": jnp.ones(2)}
    labels = {"fc": "head", "conv": "backbone"}
    tx = make_optimizer(labels, lr=0.01, recipe="penet")
    state = with_hyperparameter(tx.init(params), "total_steps", 600)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(6):  # into the warmup of 10 steps: the factor is step/10
        updates, state = tx.update(grads, state, params)
    # buffer after 6 steps of the same gradient g (1 + 1e-3 decay): g throughout; step 5 of warmup: 0.5
    np.testing.assert_allclose(updates["fc"], -0.01 * 0.5 * 1.001, rtol=1e-5)
    assert float(state.hyperparams["total_steps"]) == 600
    logits = jnp.array([[2.0, -1.0], [0.0, 1.0]])
    batch = {"label": jnp.array([0, 1]), "mask": jnp.ones(2)}
    focal = batch_loss_terms(logits, batch, jnp.ones(2), False, focal=True)
    assert focal == recipes.focal_loss_terms(logits, batch["label"], batch["mask"])
