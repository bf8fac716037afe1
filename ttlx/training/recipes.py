"""Training recipes: the paper's (the default) and the PENet reference's (``--recipe penet``).

``paper``: Adam, class-weighted cross-entropy, the learning rate halved on a validation-loss plateau
(``ttlx.training.optim``, ``ttlx.training.schedule``).

``penet``, as the published PENet code trains: the binary focal loss with gamma 2 (no class weights; over a
2-class softmax head it is the reference's sigmoid focal loss of the logit difference); SGD with momentum
0.9, dampening 0.9 and weight decay 1e-3 (torch's SGD: decay added to the gradient, the first step's
momentum buffer the gradient itself); the learning rate per step rising linearly over a warmup and then
falling on a cosine, ``(1 + cos(pi * (t - warmup) / total)) / 2`` as the reference writes it, with no
plateau reductions. The reference warms up for 10,000 of 600,000 steps; here the warmup is the same 1/60
of the run's steps (``max_epoch`` epochs). Give the reference's ``--lr 0.01``: the default 1e-4 is Adam's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from ttlx.config import RECIPES  # noqa: F401  (the names, checked by TrainConfig)

FOCAL_GAMMA = 2.0
SGD_MOMENTUM = 0.9
SGD_DAMPENING = 0.9
PENET_WEIGHT_DECAY = 1e-3
WARMUP_SHARE = 10_000 / 600_000  # the reference's warmup over its decay steps


def focal_loss_terms(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                     gamma: float = FOCAL_GAMMA) -> tuple[jax.Array, jax.Array]:
    """(sum, count) of the focal loss ``-(1 - p_t)^gamma log p_t`` over the unmasked examples (p_t: the
    softmax probability of the true class; for 2 classes the reference's binary focal loss)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_pt = jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    loss = -jnp.power(-jnp.expm1(log_pt), gamma) * log_pt  # 1 - p_t as -expm1(log p_t): exact near p_t = 1
    return jnp.sum(loss * mask), jnp.sum(mask)


def sgd_dampened(momentum: float = SGD_MOMENTUM, dampening: float = SGD_DAMPENING
                 ) -> optax.GradientTransformation:
    """torch.optim.SGD's momentum buffer: ``b = g`` on the first step, then ``b = momentum b + (1 - dampening) g``."""

    def init(params):
        return {"buffer": jax.tree.map(jnp.zeros_like, params), "count": jnp.zeros((), jnp.int32)}

    def update(grads, state, params=None):
        first = state["count"] == 0
        buffer = jax.tree.map(lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g),
                              state["buffer"], grads)
        return buffer, {"buffer": buffer, "count": state["count"] + 1}

    return optax.GradientTransformation(init, update)


def warmup_cosine(total_steps: int) -> optax.Schedule:
    """The reference's ``linear_warmup_then_cosine`` factor for a run of ``total_steps`` steps."""
    def factor(step):
        total = jnp.asarray(total_steps, jnp.float32)  # an injected hyperparameter in training
        warmup = jnp.maximum(1.0, jnp.round(total * WARMUP_SHARE))
        step = jnp.asarray(step, jnp.float32)
        rising = step / warmup
        falling = (1 + jnp.cos(math.pi * (step - warmup) / total)) / 2
        return jnp.where(step < warmup, rising, jnp.where(step < total, falling, 0.0))

    return factor


def penet_sgd(learning_rate, weight_decay: float, total_steps) -> optax.GradientTransformation:
    """SGD as the PENet reference trains: decay, dampened momentum, the warmup-cosine factor, the rate."""
    return optax.chain(optax.add_decayed_weights(weight_decay), sgd_dampened(),
                       optax.scale_by_schedule(warmup_cosine(total_steps)), optax.scale(-learning_rate))
