"""The jit-compiled steps: one training update and one forward pass, each over the whole device mesh.

The train state is a dict pytree ``{params, rest, opt_state, rng}``: ``params`` the trainable nnx
parameters, ``rest`` the other model state (BatchNorm statistics). Two graph definitions of the same
model carry the modes: the training one normalises with batch statistics (except frozen BatchNorm
layers), the evaluation one with running statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from ttlx.training.freeze import freeze_batchnorm
from ttlx.training.losses import batch_loss_terms
from ttlx.training.sharding import batch_sharded, gather_strings, replicate, replicated, shard_batch, to_host


@dataclass
class Steps:
    """The compiled steps of one run and the graph definitions they merge the state into."""

    train: Callable  # (state, batch) -> (state, loss)
    evaluate: Callable  # (model_state, batch) -> (logits, label, mask, loss numerator, loss denominator)
    train_graph: nnx.GraphDef
    eval_graph: nnx.GraphDef


def model_arrays(model: nnx.Module) -> tuple[nnx.State, nnx.State]:
    """The model's (parameters, other state such as BatchNorm statistics) as pure States: arrays as leaves,
    no nnx Variables.

    The train state holds these, so a jitted step's call flattens and rebuilds plain arrays. With nnx
    Variables as leaves, every call ran ~1,800 Python flatten and unflatten functions for ResNet50's
    ~600 arrays (RESULTS section 8). Checkpoint keys are the same either way (``state_arrays.key_name``
    drops a Variable's '.value').
    """
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return nnx.as_pure(params), nnx.as_pure(rest)


def init_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int, mesh: Mesh) -> dict:
    """The replicated train state of a freshly built (or pretrained) model; ``tx``'s labels as made by
    ``param_labels(model_arrays(model)[0], ...)``."""
    params, rest = model_arrays(model)
    state = {"params": params, "rest": rest, "opt_state": tx.init(params), "rng": jax.random.key_data(
        jax.random.key(seed))}
    return replicate(state, mesh)


def graph_defs(model: nnx.Module, frozen: set) -> tuple[nnx.GraphDef, nnx.GraphDef]:
    """(training, evaluation) graph definitions; leaves ``model`` in evaluation mode."""
    model.train()
    freeze_batchnorm(model, frozen)
    train_graph = nnx.split(model, nnx.Param, ...)[0]
    model.eval()
    eval_graph = nnx.split(model, nnx.Param, ...)[0]
    return train_graph, eval_graph


def model_input(images: jax.Array, convention: str = "imagenet") -> jax.Array:
    """The network's input from a batch's images: uint8 ones (``ttlx train``'s loaders, ``make_loader(...,
    normalize=False)``) are ImageNet-normalised here, on the device; float ones are taken as normalised.

    Normalising on the device sends a quarter of the bytes from the loader's worker processes and to the
    device. The levels are looked up in ``augment.normalize_table()``, so the values equal the host's
    ``augment.normalize`` bit for bit (XLA turns a division by a constant into a multiplication by its
    reciprocal, which rounds differently), and runs train the same either way.
    """
    if images.dtype != jnp.uint8:
        return images
    from ttlx.data.augment import normalize_table

    table = jnp.asarray(normalize_table(convention))  # the pretrained source's input convention
    return table[images.astype(jnp.int32), jnp.arange(images.shape[-1])]


def make_steps(model: nnx.Module, frozen: set, tx: optax.GradientTransformation, class_weights,
               multilabel: bool, mesh: Mesh, convention: str = "imagenet", focal: bool = False) -> Steps:
    train_graph, eval_graph = graph_defs(model, frozen)
    weights = jnp.asarray(class_weights, dtype=jnp.float32)

    def train_step(state: dict, batch: dict):
        def loss_fn(params, rest):  # copy=True: fresh variables that belong to this trace
            net = nnx.merge(train_graph, params, rest, copy=True)
            numerator, denominator = batch_loss_terms(net(model_input(batch["image"], convention)), batch, weights,
                                                      multilabel, focal)
            return numerator / denominator, nnx.as_pure(nnx.split(net, nnx.Param, ...)[2])

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], state["rest"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # an RNG key for stochastic layers of plugin models; advanced every step so resumes replay it
        rng = jax.random.key_data(jax.random.split(jax.random.wrap_key_data(state["rng"]))[0])
        return {"params": params, "rest": rest, "opt_state": opt_state, "rng": rng}, loss

    rep, data = replicated(mesh), batch_sharded(mesh)
    # the old state is donated: its buffers hold the new one (no second copy of weights and Adam moments)
    donate = (0,)
    return Steps(
        train=jax.jit(train_step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=donate),
        evaluate=make_eval_step(eval_graph, class_weights, multilabel, mesh, convention, focal),
        train_graph=train_graph,
        eval_graph=eval_graph,
    )


def make_eval_step(eval_graph: nnx.GraphDef, class_weights, multilabel: bool, mesh: Mesh,
                   convention: str = "imagenet", focal: bool = False) -> Callable:
    """(model_state, batch) -> (logits, label, mask, loss numerator, loss denominator), jit-compiled."""
    weights = jnp.asarray(class_weights, dtype=jnp.float32)

    def eval_step(model_state: dict, batch: dict):
        net = nnx.merge(eval_graph, model_state["params"], model_state["rest"], copy=True)
        logits = net(model_input(batch["image"], convention)).astype(jnp.float32)
        numerator, denominator = batch_loss_terms(logits, batch, weights, multilabel, focal)
        # labels and mask come back as global arrays so every host sees the whole batch
        return logits, batch["label"], batch["mask"], numerator, denominator

    rep, data = replicated(mesh), batch_sharded(mesh)
    return jax.jit(eval_step, in_shardings=(rep, data), out_shardings=(data, data, data, rep, rep))


def model_part(state: dict) -> dict:
    """The part of the train state that a forward pass needs."""
    return {"params": state["params"], "rest": state["rest"]}


@dataclass
class Predictions:
    """Logits and labels of one pass over an evaluation loader (padding removed), and the mean loss.

    ``ids``: each example's id, in the same order (gathered from every process), where asked for and the
    loader gives them; else None."""

    logits: np.ndarray
    labels: np.ndarray
    loss: float
    ids: np.ndarray | None = None


def predict(evaluate: Callable, model_state: dict, loader, mesh: Mesh, *, ids: bool = True) -> Predictions:
    """Run ``evaluate`` over every batch of ``loader``; the loss is the weighted mean over all examples.
    With several processes each loads its slice of every global batch; logits, labels and (``ids``) ids
    are gathered from all, so every process returns the whole split in the loader's order."""
    logits, labels, names, numerators, denominators = [], [], [], [], []
    for batch in loader:
        out_logits, out_labels, mask, numerator, denominator = evaluate(model_state, shard_batch(batch, mesh))
        keep = to_host(mask) > 0
        logits.append(to_host(out_logits)[keep])
        labels.append(to_host(out_labels)[keep])
        ids = ids and "id" in batch
        if ids:
            names.append(gather_strings(np.asarray(batch["id"]).astype(str))[keep])
        numerators.append(numerator)
        denominators.append(denominator)
    loss = float(np.sum(jax.device_get(numerators)) / np.sum(jax.device_get(denominators)))
    return Predictions(np.concatenate(logits), np.concatenate(labels), loss,
                       np.concatenate(names) if ids and names else None)
