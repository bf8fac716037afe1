"""DenseNet201 trains its dense blocks as a whole (per-segment BatchNorm moments computed once): the same
outputs, running statistics and gradients as applying its units one by one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ttlx.models import create_model
from ttlx.models.heads import Network
from ttlx.runs.checkpoint import flatten


def train_pass(model, whole_blocks: bool):
    """(logits, updated BatchNorm statistics, gradients) of one training-mode pass."""
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 32, 32, 3), dtype=np.float32))

    def loss(params, rest):
        net = nnx.merge(graph, params, rest, copy=True)
        features = net.forward_features if whole_blocks else (lambda v: Network.forward_features(net, v))
        out = net.apply_head(features(x))
        return jnp.sum(out**2), (out, nnx.split(net, nnx.Param, ...)[2])

    (_, (out, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, rest)
    return out, flatten(stats), flatten(grads)


@pytest.mark.slow
@pytest.mark.parametrize("frozen", [False, True], ids=["all-training", "one-norm-frozen"])
def test_whole_blocks_equal_unit_by_unit(frozen):
    # stem, dense block 1 (6 layers), transition 1 and 2 layers of block 2: every code path of a block
    model = create_model("densenet201", 8, layerwise=True, head="pool", num_classes=3, pretrained="random",
                         image_size=32)
    model.train()
    if frozen:  # LWFT: a frozen layer's norm uses running statistics amid training-mode ones
        model.features.denseblock1.denselayer3.norm1.use_running_average = True
    fast, slow = train_pass(model, True), train_pass(model, False)
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5, atol=1e-6)
    assert set(fast[1]) == set(slow[1])
    for key in slow[1]:
        np.testing.assert_allclose(fast[1][key], slow[1][key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert set(fast[2]) == set(slow[2])
    scale = max(float(np.max(np.abs(g))) for g in slow[2].values())
    for key in slow[2]:
        # atol: norm0's scale feeds BatchNorm layers only, so its exact gradient is 0 (scale invariance) and
        # both paths return float32 rounding noise of about 1e-7 there
        np.testing.assert_allclose(fast[2][key], slow[2][key], rtol=1e-4, atol=2e-5 * scale, err_msg=key)
