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


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth colour noise: decodes like a photograph (a gradient would hide decoding differences)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def _full_decode_train_transform(size: int):
    """train_transform as it was before rows were left undecoded: the whole (drafted) JPEG, numpy flip."""

    def apply(data: bytes, rng: np.random.Generator) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        full = image.size
        left, top, right, bottom = augment.random_resized_crop_box(*full, rng)
        need = (math.ceil(full[0] * size / (right - left)), math.ceil(full[1] * size / (bottom - top)))
        image = augment.draft(image, need)
        image.load()
        sx, sy = image.width / full[0], image.height / full[1]
        box = (left * sx, top * sy, right * sx, bottom * sy)
        array = augment.to_rgb_array(image.resize((size, size), Image.BILINEAR, box=box))
        if rng.random() < 0.5:
            array = array[:, ::-1]
        return np.ascontiguousarray(array)

    return apply


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_load_rows_gives_the_first_rows_of_a_full_decode(mode, scale):
    array = _photo(640, 480)
    data = _encoded(array if mode == "RGB" else array[..., 0], "JPEG")
    full = Image.open(io.BytesIO(data))
    full.draft(full.mode, (640 // scale, 480 // scale))
    expected = np.asarray(full)
    for rows in (1, 17, expected.shape[0] // 2, expected.shape[0] - 1):
        image = Image.open(io.BytesIO(data))
        image.draft(image.mode, (640 // scale, 480 // scale))
        image = augment.load_rows(image, rows)
        assert image.size == (expected.shape[1], rows)
        np.testing.assert_array_equal(np.asarray(image), expected[:rows])


def test_load_rows_loads_whole_images_it_cannot_cut():
    array = _photo(64, 48)
    png = augment.load_rows(Image.open(io.BytesIO(_encoded(array, "PNG"))), 10)  # not a JPEG
    np.testing.assert_array_equal(np.asarray(png), array)
    jpeg = _encoded(array, "JPEG")
    whole = augment.load_rows(Image.open(io.BytesIO(jpeg)), 48)  # all rows asked for
    np.testing.assert_array_equal(np.asarray(whole), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))


@pytest.mark.parametrize(
    "shape, mode, fmt",
    [
        ((600, 450), "RGB", "JPEG"),  # the benchmark's size: rows below the crop are not decoded
        ((1600, 1200), "RGB", "JPEG"),  # large crops decode at a DCT scale (draft), then cut
        ((300, 900), "RGB", "JPEG"),  # portrait: decoded whole (Pillow 13's pass order depends on the height)
        ((300, 300), "L", "JPEG"),
        ((230, 100), "RGB", "JPEG"),
        ((120, 90), "RGB", "PNG"),
    ],
)
def test_train_transform_is_pixel_for_pixel_the_full_decode(shape, mode, fmt):
    array = _photo(*shape, seed=shape[0])
    data = _encoded(array if mode == "RGB" else array[..., 0], fmt)
    fast, full = augment.train_transform(224), _full_decode_train_transform(224)
    for seed in range(25):
        np.testing.assert_array_equal(fast(data, np.random.default_rng(seed)), full(data, np.random.default_rng(seed)))


def test_normalize_equals_the_float32_formula_for_every_level_bit_for_bit():
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1).reshape(1, 16, 16, 3)
    table = np.arange(256, dtype=np.float32)[:, None] / (255.0 * augment.IMAGENET_STD) - (
        augment.IMAGENET_MEAN / augment.IMAGENET_STD
    )
    np.testing.assert_array_equal(augment.normalize(levels).reshape(256, 3), table)
    odd = np.random.default_rng(1).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)[:, :, ::2]  # not contiguous
    expected = table[odd, np.arange(3)]
    np.testing.assert_array_equal(augment.normalize(odd), expected)
    assert augment.normalize(np.zeros((0, 4, 4, 3), np.uint8)).shape == (0, 4, 4, 3)


def test_normalize_matches_the_imagenet_formula():
    batch = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    expected = (batch / 255.0 - np.asarray([0.485, 0.456, 0.406])) / np.asarray([0.229, 0.224, 0.225])
    out = augment.normalize(batch)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    black = float(augment.normalize(np.zeros((1, 1, 1, 3), np.uint8))[0, 0, 0, 0])
    assert math.isclose(black, -0.485 / 0.229, rel_tol=1e-6)


def test_train_transform_decodes_whole_images_if_cutting_rows_fails(monkeypatch):
    """load_rows relies on PIL internals; should a Pillow release change them, the output stays the same."""
    data = _encoded(_photo(600, 450, seed=3), "JPEG")
    expected = [augment.train_transform(224)(data, np.random.default_rng(seed)) for seed in range(10)]

    def changed_internals(image, rows):
        image._size = None  # what a half-done cut might leave behind
        raise AttributeError("'JpegImageFile' object has no attribute 'tile'")

    monkeypatch.setattr(augment, "load_rows", changed_internals)
    for seed, want in enumerate(expected):
        np.testing.assert_array_equal(augment.train_transform(224)(data, np.random.default_rng(seed)), want)
