"""Grad-CAM: it finds the blob that decides the class, equals the class activation map for a pooled head,
and writes overlays."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from PIL import Image

from ttlx.analysis.gradcam import gradcam, peak_position, write_overlays
from ttlx.errors import ConfigError

SIZE, SIGMA = 32, 2.5


def blob_images(count: int, seed: int):
    """Noise images with one Gaussian blob at a random, known place; the blob's colour (red 0, green 1)
    is the class, so the blob is the only evidence for it."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.5, (count, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 2, count).astype(np.int32)
    centres = rng.uniform(2 * SIGMA, SIZE - 2 * SIGMA, (count, 2))
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for i in range(count):
        blob = np.exp(-((rows - centres[i, 0]) ** 2 + (cols - centres[i, 1]) ** 2) / (2 * SIGMA**2))
        images[i, :, :, labels[i]] += 3.0 * blob
    return images, labels, centres


@pytest.fixture(scope="module")
def blob_model(tinynet):
    """tinynet cut after stage 1 (a 16x16 map at 32 px) with a pooled head, trained for 60 steps."""
    from ttlx.models import create_model

    model = create_model("tinynet", 1, num_classes=2, head="pool", image_size=SIZE, seed=0)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, images, labels):
        def loss(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()

        grads = nnx.grad(loss)(model)
        optimizer.update(model, grads)

    model.train()
    for i in range(60):
        images, labels, _ = blob_images(32, seed=i)
        step(model, optimizer, jnp.asarray(images), jnp.asarray(labels))
    model.eval()
    return model


def test_the_map_peaks_on_the_blob_that_decides_the_class(blob_model):
    images, labels, centres = blob_images(64, seed=999)
    cam = gradcam(blob_model, images)
    assert (cam.target == labels).mean() >= 0.95  # the model learned the task
    assert cam.maps.shape == (64, SIZE, SIZE) and cam.coarse.shape == (64, 16, 16)
    distance = np.linalg.norm(peak_position(cam.maps) - centres, axis=1)
    assert (distance <= 2 * SIGMA).mean() >= 0.8  # a random peak would land on the blob ~8% of the time
    # the map of the other class is no evidence for the blob: it is empty or lies elsewhere
    other = gradcam(blob_model, images, target=1 - labels)
    other_distance = np.linalg.norm(peak_position(other.maps) - centres, axis=1)
    on_blob = (other_distance <= 2 * SIGMA) & (other.maps.max(axis=(1, 2)) > 0)
    assert on_blob.mean() <= 0.2


def test_with_a_pooled_head_grad_cam_is_the_class_activation_map(blob_model):
    # d logit_c / dA = W[:, c] / (h*w) everywhere, so Grad-CAM = ReLU(A . W[:, c]) up to scale (Zhou 2016)
    images, _, _ = blob_images(6, seed=5)
    cam = gradcam(blob_model, images, target=1, batch_size=4)  # two chunks, the last one padded
    acts = np.asarray(blob_model.intermediates(jnp.asarray(images))["layer1.0"])
    weights = np.asarray(blob_model.fc.kernel[...])[:, 1]
    reference = np.maximum(acts @ weights, 0.0)
    reference /= reference.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(cam.coarse, reference, atol=1e-5)
    assert cam.layer == "layer1.0" and list(cam.target) == [1] * 6


def test_an_earlier_unit_and_bad_requests(blob_model):
    images, _, _ = blob_images(2, seed=6)
    assert gradcam(blob_model, images, layer="stem").coarse.shape == (2, 16, 16)
    with pytest.raises(ConfigError, match=r"The model has no unit 'layer4.2'; choose one of: stem, layer1.0\."):
        gradcam(blob_model, images, layer="layer4.2")
    headless = nnx.clone(blob_model)
    headless.head_mode = None
    with pytest.raises(ConfigError, match="Grad-CAM needs a model with a classifier head"):
        gradcam(headless, images)


def test_overlays_are_written_one_png_per_image(blob_model, tmp_path):
    images, labels, _ = blob_images(3, seed=7)
    cam = gradcam(blob_model, images)
    paths = write_overlays(images, cam, tmp_path, ids=["crop/a.png", "b", "c"], classes=["red", "green"],
                           labels=labels)
    assert [p.name for p in paths] == ["gradcam_000_crop_a.png", "gradcam_001_b.png", "gradcam_002_c.png"]
    with Image.open(paths[0]) as png:
        assert png.size == (640, 340)
