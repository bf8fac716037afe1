"""Augmentation factories: torchvision's crop geometry, eval resize + centre crop, normalisation."""

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ttlx.data import augment


def _encoded(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 90.0),
        ],
        axis=2,
    ).astype(np.uint8)


@settings(max_examples=200, deadline=None)
@given(st.integers(8, 2000), st.integers(8, 2000), st.integers(0, 2**32 - 1))
def test_random_resized_crop_box_stays_inside_with_valid_area_and_aspect(width, height, seed):
    left, top, right, bottom = augment.random_resized_crop_box(width, height, np.random.default_rng(seed))
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    w, h = right - left, bottom - top
    fallback = augment._central_fallback(width, height, (3 / 4, 4 / 3))
    if (left, top, right, bottom) == fallback:
        return  # torchvision's answer after ten failed draws (e.g. for long strips)
    # Rounding to whole pixels moves area and aspect by at most one pixel per side.
    assert (w + 1) * (h + 1) >= 0.08 * width * height
    assert 3 / 4 * (h - 1) <= w + 1 and w - 1 <= 4 / 3 * (h + 1)


def test_random_resized_crop_box_covers_the_scale_range():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(2000):
        left, top, right, bottom = augment.random_resized_crop_box(600, 450, rng)
        areas.append((right - left) * (bottom - top) / (600 * 450))
    assert min(areas) == pytest.approx(0.08, abs=0.01)
    assert max(areas) > 0.95


def test_fallback_is_the_central_crop_clamped_to_the_ratio_range():
    # A 10:1 strip cannot hold a 3/4..4/3 box of 99-100% area: torchvision falls back to a central crop
    # of the widest allowed aspect: width round(100 * 4/3) = 133, left (1000 - 133) // 2 = 433.
    assert augment.random_resized_crop_box(1000, 100, np.random.default_rng(0), scale=(0.99, 1.0)) == (
        433,
        0,
        566,
        100,
    )


@pytest.mark.parametrize(
    "size, expected",
    [((600, 450), (341, 256)), ((450, 600), (256, 341)), ((256, 256), (256, 256)), ((8, 8), (256, 256))],
)
def test_resize_shorter_matches_torchvision_resize_int(size, expected):
    assert augment.resize_shorter(*size, 256) == expected


def test_center_crop_offsets_match_torchvision_rounding():
    assert augment.center_crop_offsets(341, 256, 224) == (58, 16)  # round(58.5) = 58, as torchvision
    assert augment.center_crop_offsets(256, 256, 224) == (16, 16)


def test_eval_transform_is_resize_then_center_crop():
    array = _gradient(300, 200)
    out = augment.eval_transform(112)(_encoded(array))
    # 112 * 256/224 = 128 on the short side, then the central 112 x 112.
    resized = Image.fromarray(array).resize((192, 128), Image.BILINEAR)
    expected = np.asarray(resized)[8:120, 40:152]
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_eval_transform_of_grayscale_repeats_the_channel():
    gray = _gradient(64, 48)[..., 0]
    out = augment.eval_transform(32)(_encoded(gray))
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_jpeg_draft_decoding_stays_close_to_full_decoding():
    array = _gradient(1600, 1200)
    data = _encoded(array, "JPEG")
    fast = augment.eval_transform(224)(data).astype(np.float32)
    full = Image.open(io.BytesIO(data)).convert("RGB").resize((341, 256), Image.BILINEAR)
    reference = np.asarray(full)[16:240, 58:282].astype(np.float32)
    assert np.abs(fast - reference).mean() < 2.0


def test_train_transform_is_deterministic_for_a_seed_and_varies_across_seeds():
    data = _encoded(_gradient(120, 90))
    transform = augment.train_transform(64)
    a = transform(data, np.random.default_rng(5))
    b = transform(data, np.random.default_rng(5))
    c = transform(data, np.random.default_rng(6))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_train_transform_at_full_scale_is_a_resize_or_its_mirror():
    array = _gradient(80, 80)
    full = np.asarray(Image.fromarray(array).resize((40, 40), Image.BILINEAR))
    transform = augment.train_transform(40, scale=(1.0, 1.0))
    flips = 0
    for seed in range(40):
        out = transform(_encoded(array), np.random.default_rng(seed))
        mirrored = np.array_equal(out, full[:, ::-1])
        assert np.array_equal(out, full) or mirrored
        flips += mirrored
    assert 8 <= flips <= 32  # a fair coin over 40 draws


def test_normalize_matches_the_imagenet_formula():
    batch = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    expected = (batch / 255.0 - np.asarray([0.485, 0.456, 0.406])) / np.asarray([0.229, 0.224, 0.225])
    out = augment.normalize(batch)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    black = float(augment.normalize(np.zeros((1, 1, 1, 3), np.uint8))[0, 0, 0, 0])
    assert math.isclose(black, -0.485 / 0.229, rel_tol=1e-6)
