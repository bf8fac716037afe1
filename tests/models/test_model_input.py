"""``ttlx train`` feeds uint8 images and the steps normalise them on the device: same values as the host's
``augment.normalize``, bit for bit, so a run trains exactly as with host-normalised batches."""

from __future__ import annotations

import jax
import numpy as np
import optax

from ttlx.data.augment import normalize
from ttlx.models import create_model
from ttlx.training.sharding import data_mesh, shard_batch
from ttlx.training.steps import init_state, make_steps, model_input


def test_every_uint8_level_normalises_on_the_device_as_on_the_host():
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1).reshape(4, 8, 8, 3)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 12, 3), dtype=np.uint8)
    for batch in (levels, images):
        ours = np.asarray(jax.jit(model_input)(batch))
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours.view(np.uint32), normalize(batch).view(np.uint32))
    floats = normalize(images)
    assert model_input(floats) is floats  # float images are taken as normalised


def test_a_train_step_on_uint8_images_equals_one_on_host_normalised_images(tinynet):
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    mesh = data_mesh()
    results = []
    for image in (images, normalize(images)):
        model = create_model("tinynet", 1, num_classes=2, head="pool", image_size=32, seed=0)
        tx = optax.adam(1e-2)
        steps = make_steps(model, set(), tx, np.ones(2, np.float32), False, mesh)
        state = init_state(model, tx, 0, mesh)
        batch = shard_batch({"image": image, "label": np.array([0, 1, 0, 1], np.int32),
                             "mask": np.ones(4, np.float32)}, mesh)
        state, loss = steps.train(state, batch)
        logits = steps.evaluate({"params": state["params"], "rest": state["rest"]}, batch)[0]
        results.append((float(loss), np.asarray(logits), jax.tree.leaves(state["params"])))
    (loss_a, logits_a, params_a), (loss_b, logits_b, params_b) = results
    assert loss_a == loss_b
    np.testing.assert_array_equal(logits_a, logits_b)
    for a, b in zip(params_a, params_b, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
