"""Hostile image files: each one either loads with the right pixels or is named in the one bad-image report."""

import csv
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from ttlx.data import images
from ttlx.data.prepare import prepare_dataset
from ttlx.data.records import RecordReader
from ttlx.data.store import load_prepared
from ttlx.errors import DataError

LIMIT = Image.MAX_IMAGE_PIXELS  # PIL's default, 89478485: over it PIL warns, over twice it raises


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noise(seed: int, size=(20, 24)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but holds a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _gray16(values) -> bytes:
    return _encoded(Image.fromarray(np.asarray(values, dtype=np.uint16)), "PNG")


def _stored(source, channels=3) -> np.ndarray:
    image = images.open_source(source, shorter_at_least=256)
    return np.asarray(images.stored_image(image, channels=channels, max_size=256, pad_square=False))


def _reason(source) -> str:
    with pytest.raises(images.BadImage) as err:
        images.open_source(source, shorter_at_least=256)
    return str(err.value)


# --- one file at a time ------------------------------------------------------------------------------


def test_zero_byte_and_truncated_jpeg_are_bad_with_their_reason(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    jpeg = _encoded(Image.fromarray(_noise(0)), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    assert _reason(tmp_path / "empty.jpg") == "empty file"
    assert _reason(tmp_path / "cut.jpg") == "truncated"
    assert _reason(tmp_path / "missing.jpg") == "file not found"
    assert _reason(b"") == "not an image or corrupt"  # bytes have no file to be empty


def test_png_saved_with_a_jpg_extension_loads_losslessly(tmp_path):
    pixels = _noise(1)
    (tmp_path / "really_a_png.jpg").write_bytes(_encoded(Image.fromarray(pixels), "PNG"))
    np.testing.assert_array_equal(_stored(tmp_path / "really_a_png.jpg"), pixels)


def test_alpha_is_composited_over_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 255), (255, 0, 0, 128), (0, 0, 255, 0)])  # opaque, half, transparent
    stored = _stored(_encoded(rgba, "PNG"))
    assert stored.tolist() == [[[255, 0, 0], [255, 127, 127], [255, 255, 255]]]
    gray = _stored(_encoded(rgba, "PNG"), channels=1)
    assert gray.shape == (1, 3) and gray[0, 2] == 255  # the hidden blue never shows through
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 255), (0, 0)])
    assert _stored(_encoded(la, "PNG"), channels=1).tolist() == [[0, 255]]


def test_16_bit_and_float_grayscale_are_scaled_to_8_bits_not_clipped():
    full = _gray16([[65535, 32768], [0, 257]])
    assert Image.open(io.BytesIO(full)).mode == "I;16"
    assert _stored(full, channels=1).tolist() == [[255, 128], [0, 1]]
    assert _stored(full, channels=3)[0, 1].tolist() == [128, 128, 128]
    twelve_bit = _gray16([[4095, 2048], [0, 1000]])  # x-rays often use 12 of the 16 bits
    assert _stored(twelve_bit, channels=1).tolist() == [[255, 128], [0, 62]]
    floats = _encoded(Image.fromarray(np.array([[np.nan, 0.5], [1.0, -3.0]], np.float32)), "TIFF")  # mode F
    assert _stored(floats, channels=1).tolist() == [[0, 128], [255, 0]]


def test_cmyk_jpeg_loads_as_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan or black, full magenta and yellow: red
    stored = _stored(_encoded(cmyk, "JPEG", quality=95))
    assert stored.shape == (16, 16, 3)
    assert np.abs(stored.astype(int) - [255, 0, 0]).max() <= 3


def test_lab_tiff_loads_as_rgb_and_as_grayscale():
    """PIL converts LAB to RGB but not to L; grayscale datasets go by way of RGB."""
    lab = _encoded(Image.new("LAB", (4, 4), (128, 128, 128)), "TIFF")  # mid lightness, neutral a and b
    rgb, gray = _stored(lab)[0, 0].astype(int), _stored(lab, channels=1)[0, 0]
    assert rgb.max() - rgb.min() <= 2 and 100 < gray < 150 and abs(int(gray) - rgb.mean()) <= 2


def test_a_tiff_with_a_fractional_strip_offset_is_reported_not_a_crash():
    """Found by fuzzing: PIL raised TypeError (not OSError) for this, which stopped the whole build."""
    data = bytearray(_encoded(Image.new("RGB", (4, 4), (1, 2, 3)), "TIFF"))
    entries = struct.unpack_from("<H", data, 8)[0]  # little-endian TIFF, first IFD at byte 8
    for offset in range(10, 10 + 12 * entries, 12):
        if struct.unpack_from("<H", data, offset)[0] == 273:  # StripOffsets: LONG -> RATIONAL
            struct.pack_into("<H", data, offset + 2, 5)
    assert _reason(bytes(data)) == "corrupt or unsupported"


@pytest.mark.parametrize(("side", "pixels"), [(30000, 900_000_000), (12000, 144_000_000)])
def test_a_decompression_bomb_is_refused_from_its_header(side, pixels, monkeypatch):
    """30000^2 is over twice the limit (PIL raises); 12000^2 is in PIL's warning zone (PIL only warns)."""
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or load(self))
    for action in ("ignore", "error"):  # PIL's warning not shown, or raised as under `python -W error`
        with warnings.catch_warnings():
            warnings.simplefilter(action)
            reason = _reason(_png_header_only(side, side))
        assert reason == f"too large: {pixels} pixels, over PIL's decompression-bomb limit of {LIMIT}"
    assert decoded == []


# --- hypothesis: anything either decodes or is reported, nothing else escapes --------------------------

JPEG = _encoded(Image.fromarray(_noise(2)), "JPEG", quality=90)
PNG = _encoded(Image.fromarray(_noise(3)), "PNG")
TIFF = _encoded(Image.fromarray(_noise(4)), "TIFF")
ENCODED = {"JPEG": JPEG, "PNG": PNG, "TIFF": TIFF}
ORIGINAL = {fmt: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for fmt, data in ENCODED.items()}


def _stored_or_bad(data: bytes) -> np.ndarray | None:
    """The stored pixels (full size), or None when the image is reported bad; anything else fails the test."""
    try:
        image = images.open_source(data)
        stored = images.stored_image(image, channels=3, max_size=0, pad_square=False)
        images.encode(stored, "jpeg")  # as prepare does: a decodable image the encoder refuses is reported too
    except images.BadImage as err:
        assert str(err)  # a reason for the report
        return None
    return np.asarray(stored)


# Real signatures (JPEG, PNG, GIF, BMP, TIFF, WebP) so that random tails reach each format's parser.
HEADS = [b"", JPEG[:20], PNG[:33], b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x01\x00\x00WEBPVP8 "]


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the garbage it skips (corrupt EXIF)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADS), st.binary(max_size=600))
def test_random_bytes_decode_or_are_reported(head, tail):
    _stored_or_bad(head + tail)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["JPEG", "PNG"]), st.integers(0, 1 << 30))
def test_a_truncated_image_is_reported_unless_all_its_pixels_survive(fmt, cut):
    data = JPEG if fmt == "JPEG" else PNG
    stored = _stored_or_bad(data[: cut % len(data)])  # always shorter than the whole file
    if fmt == "JPEG":
        assert stored is None  # every cut loses scan data or the end marker
    elif stored is not None:  # a PNG may lose its checksums and IEND chunk, never a pixel
        np.testing.assert_array_equal(stored, ORIGINAL["PNG"])


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(ENCODED)),
    st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_corrupted_bytes_decode_or_are_reported(fmt, flips):
    """Found by this test: one flipped byte in the TIFF's header makes it 24x65556, which decodes but which
    libjpeg cannot write; it is reported, not a crash of prepare."""
    data = bytearray(ENCODED[fmt])
    for position, value in flips:
        data[position % len(data)] = value
    stored = _stored_or_bad(bytes(data))
    assert stored is None or (stored.ndim == 3 and stored.shape[2] == 3)


# --- through `ttlx prepare`: one report naming every bad file, or skipped.csv ----------------------------


@pytest.fixture
def hostile_folder(tmp_path):
    """Two classes of 6 good images each, plus every kind of hostile file (4 unreadable, 4 odd but fine)."""
    root = tmp_path / "mine"
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 100 * c, 90)).save(root / name / f"good{i}.png")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "cut.jpg").write_bytes(JPEG[: len(JPEG) // 2])
    (root / "b" / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    (root / "b" / "bomb_warn.png").write_bytes(_png_header_only(12000, 12000))
    (root / "a" / "png_named.jpg").write_bytes(_encoded(Image.new("RGB", (8, 8), (10, 200, 30)), "PNG"))
    (root / "b" / "alpha.png").write_bytes(_encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG"))
    (root / "a" / "gray16.png").write_bytes(_gray16(np.repeat([[65535] * 8 + [32768] * 8], 8, axis=0)))
    (root / "b" / "cmyk.jpg").write_bytes(_encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    return root


def _bad_files(root):
    too_large = "too large: {} pixels, over PIL's decompression-bomb limit of " + str(LIMIT)
    return [
        (str(root / "a" / "cut.jpg"), "truncated"),
        (str(root / "a" / "empty.jpg"), "empty file"),
        (str(root / "b" / "bomb.png"), too_large.format(900_000_000)),
        (str(root / "b" / "bomb_warn.png"), too_large.format(144_000_000)),
    ]


def test_prepare_names_every_bad_file_in_one_sentence_and_never_warns(hostile_folder, tmp_path):
    listing = ", ".join(f"{file} ({why})" for file, why in _bad_files(hostile_folder))
    expected = (
        f"4 image(s) of 'folder' could not be read: {listing}; replace or remove them, "
        "or pass --on-bad-image skip to leave them out."
    )
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as err:
            prepare_dataset("folder", tmp_path / "data", hostile_folder)
    assert str(err.value) == expected
    assert not [w for w in shown if issubclass(w.category, Image.DecompressionBombWarning)]
    assert not (tmp_path / "data" / "folder").exists()

    from typer.testing import CliRunner

    from ttlx.cli import app

    args = ["prepare", "folder", "--manual-dir", str(hostile_folder), "--data-dir", str(tmp_path / "data")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"Error: {expected}" in result.output


def test_skip_records_the_bad_files_and_stores_the_odd_ones_right(hostile_folder, tmp_path):
    root = prepare_dataset("folder", tmp_path / "data", hostile_folder, on_bad_image="skip")
    with open(root / "skipped.csv", newline="") as f:
        assert [tuple(r) for r in csv.reader(f)] == [("file", "reason"), *_bad_files(hostile_folder)]
    prepared = load_prepared("folder", tmp_path / "data")
    assert prepared.meta["num_examples"] == 12 + 4
    reader = RecordReader(prepared.records_dir)

    def stored(example_id):
        data, _, read_id = reader.read(prepared.position[example_id])
        assert read_id == example_id
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)

    expected = {  # stored as JPEG (quality 95): within 3 levels
        "a/png_named.jpg": [10, 200, 30],
        "b/alpha.png": [255, 127, 127],  # half-transparent red over white
        "b/cmyk.jpg": [255, 0, 0],
    }
    for example_id, colour in expected.items():
        assert np.abs(stored(example_id) - colour).max() <= 3, example_id
    gray = stored("a/gray16.png")
    assert np.abs(gray[:, :8] - 255).max() <= 3 and np.abs(gray[:, 8:] - 128).max() <= 3


def test_an_image_too_tall_for_jpeg_is_reported_and_stored_as_png_fine():
    tall = Image.new("RGB", (24, images.JPEG_MAX_SIDE + 56), (10, 20, 30))
    with pytest.raises(images.BadImage, match="too large to store as JPEG"):
        images.encode(tall, "jpeg")
    assert Image.open(io.BytesIO(images.encode(tall, "png"))).size == tall.size
    images.encode(Image.new("RGB", (24, images.JPEG_MAX_SIDE)), "jpeg")  # the limit itself is fine
