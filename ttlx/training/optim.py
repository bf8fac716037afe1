"""The optimizer: torch-style Adam per parameter group, with the learning rate as injected state.

Groups: 'head' (the new classifier) at the learning rate, 'backbone' at the learning rate divided by
``ptl_decay``, 'frozen' (LWFT) with no update and no Adam moments. The learning rate lives in the
optimizer state (``optax.inject_hyperparams``) so the epoch-level plateau tracker can set it without
recompiling the train step, and a checkpoint of the state holds it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def adam(learning_rate, weight_decay: float) -> optax.GradientTransformation:
    """torch.optim.Adam: weight decay is L2 added to the gradient (not decoupled as in AdamW)."""
    tx = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx


def make_optimizer(labels, *, lr: float, ptl_decay: float = 1.0, weight_decay: float = 0.0,
                   recipe: str = "paper") -> optax.GradientTransformation:
    """Adam over the labelled parameter groups (see :func:`ttlx.training.freeze.param_labels`); with
    ``recipe="penet"`` the PENet reference's SGD (``ttlx.training.recipes``; weight decay 1e-3 unless given),
    whose schedule's length is the injected ``total_steps`` (set it with :func:`with_hyperparameter`)."""
    present = set(jax.tree.leaves(labels))

    def groups(learning_rate, total_steps=None):
        if recipe == "penet":
            from ttlx.training.recipes import PENET_WEIGHT_DECAY, penet_sgd

            decay = weight_decay or PENET_WEIGHT_DECAY
            rates = (learning_rate, learning_rate / ptl_decay)
            head, backbone = (penet_sgd(rate, decay, total_steps) for rate in rates)
        else:
            head, backbone = adam(learning_rate, weight_decay), adam(learning_rate / ptl_decay, weight_decay)
        transforms = {"head": head, "backbone": backbone, "frozen": optax.set_to_zero()}
        return optax.multi_transform({k: v for k, v in transforms.items() if k in present}, labels)

    if recipe == "penet":
        return optax.inject_hyperparams(groups)(learning_rate=lr, total_steps=1.0)
    return optax.inject_hyperparams(groups)(learning_rate=lr)


def learning_rate(opt_state) -> float:
    return float(opt_state.hyperparams["learning_rate"])


def with_learning_rate(opt_state, lr: float):
    """The optimizer state with a new learning rate (same dtype and sharding, so no recompilation)."""
    return with_hyperparameter(opt_state, "learning_rate", lr)


def with_hyperparameter(opt_state, name: str, value: float):
    """The optimizer state with a new value of an injected hyperparameter (same dtype and sharding)."""
    old = opt_state.hyperparams[name]
    new = jax.device_put(jnp.asarray(value, dtype=old.dtype), old.sharding)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, name: new})
