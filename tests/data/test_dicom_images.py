"""DICOM as 2D images, on real files: pydicom's bundled test files and pydicom-data's (a chest CR, CT, MR).

References are independent of ``ttlx.data.dicom`` where one exists: pydicom's own windowing and VOI LUT
(``apply_voi_lut``, whose output range is read off two sentinel values far outside the window), lossless
encodings of one image that must decode to the same pixels, and pixel values pydicom documents.
"""

import io
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from ttlx.data import dicom, images, pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.data.records import RecordReader
from ttlx.data.store import load_prepared
from ttlx.errors import DataError


def bundled(name: str) -> Path:
    """A file shipped inside pydicom's wheel, else in pydicom-data (never one pydicom would download)."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    return path if path.is_file() else data_store(name)


def data_store(name: str) -> Path:
    """A file of the pydicom-data package (the test extra); the test skips where it is not installed."""
    store = pytest.importorskip("data_store", reason="pydicom-data (pip install 'ttlx[test]') holds this file")
    path = Path(store.__file__).parent / "data" / name
    assert path.is_file(), name
    return path


def reference_window(path: Path) -> np.ndarray:
    """pydicom's window (or VOI LUT) of the modality values, as 0..1, and never ttlx's code."""
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    sentinels = np.concatenate([values.ravel(), [-1e7, 1e7]])
    out = apply_voi_lut(sentinels, ds).astype(np.float64)
    low, high = out[-2], out[-1]
    return ((out[:-2] - low) / (high - low)).reshape(values.shape)


def test_a_real_chest_cr_is_windowed_and_its_monochrome1_inverted():
    path = data_store("RG1_UNCR.dcm")  # CR chest, MONOCHROME1, window 15000/30000, 15 bits
    ours = dicom.read_image(path)
    expected = np.rint((1.0 - reference_window(path)) * 255)
    assert ours.shape == (1955, 1841) and ours.dtype == np.uint8
    assert np.abs(ours - expected).max() <= 1  # rounding of the last bit only
    # the lossless JPEG 2000 copy of the same radiograph decodes (pylibjpeg-openjpeg) to the same image
    assert np.array_equal(dicom.read_image(data_store("RG1_J2KR.dcm")), ours)
    lossy = dicom.read_image(data_store("RG1_J2KI.dcm")).astype(np.int16)
    assert np.abs(lossy - ours).mean() < 2


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "MR2_UNCR.dcm"])
def test_rescale_then_the_files_window(name):
    path = data_store(name)  # 693: CT, intercept -1024, window 40/100; MR2: slope 3.77, window 1000/2000
    ours = dicom.read_image(path).astype(np.int16)
    assert np.abs(ours - np.rint(reference_window(path) * 255)).max() <= 1
    ds = pydicom.dcmread(path)
    on_raw = np.clip((ds.pixel_array - 999.5) / 1999 + 0.5, 0, 1) * 255  # the window without the rescale
    if name == "MR2_UNCR.dcm":
        assert np.abs(ours - on_raw).mean() > 20  # the slope of 3.77 matters


def test_a_voi_lut_sequence_is_applied(tmp_path):
    path = data_store("vlut_04.dcm")  # 8-bit stored values through a 16-bit VOI LUT (close to x * 257)
    ds = pydicom.dcmread(path)
    lut = apply_voi_lut(ds.pixel_array, ds).astype(np.float64) / 65535
    ours = dicom.read_image(path)
    assert np.abs(ours.astype(np.int16) - np.rint(lut * 255)).max() <= 1
    item = ds.VOILUTSequence[0]  # the same file with its LUT reversed: the image must come out inverted
    item.LUTData = list(reversed(item.LUTData))
    ds.save_as(tmp_path / "reversed.dcm")
    assert np.abs(dicom.read_image(tmp_path / "reversed.dcm").astype(np.int16) - (255 - ours)).max() <= 1


def test_without_a_window_the_image_range_is_used():
    path = bundled("CT_small.dcm")  # CT, intercept -1024, no window
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) - 1024
    expected = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    assert np.array_equal(dicom.read_image(path), expected.astype(np.uint8))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_compressed_transfer_syntaxes_decode_to_the_uncompressed_pixels(name):
    if "jpeg_ls" in name:
        pytest.importorskip("gdcm", reason="JPEG-LS needs python-gdcm (ttlx[dicom-lossless])")
    assert np.array_equal(dicom.read_image(bundled(name)), dicom.read_image(bundled("MR_small.dcm")))


def test_jpeg_lossless_needs_gdcm_and_says_so(monkeypatch):
    pytest.importorskip("gdcm", reason="JPEG Lossless needs python-gdcm (ttlx[dicom-lossless])")
    path = data_store("JPGLosslessP14SV1_1s_1f_8b.dcm")
    assert dicom.read_image(path).shape == (768, 1024)
    from pydicom.pixels.decoders import JPEGLosslessSV1Decoder

    monkeypatch.setattr(JPEGLosslessSV1Decoder, "_available", {})  # as if python-gdcm were not installed
    with pytest.raises(dicom.DicomError, match=r"^compressed as JPEG Lossless, Non-Hierarchical, First-Order "
                                               r"Prediction .*, which no installed decoder reads: pip install "
                                               r"'ttlx\[dicom-lossless\]' \(GDCM\)$"):
        dicom.read_image(path)


def test_colour_files_are_rgb():
    rgb = dicom.read_image(data_store("SC_rgb.dcm"))  # pydicom's documented stripes: red first, white last
    assert rgb.shape == (100, 100, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[50, 50].tolist() == [128, 128, 255]
    assert rgb[99, 99].tolist() == [255, 255, 255]
    ycbcr = dicom.read_image(bundled("SC_rgb_jpeg_dcmtk.dcm"))  # YBR_FULL JPEG of the same stripes
    assert np.abs(ycbcr.astype(int) - rgb.astype(int)).mean() < 3
    palette = dicom.read_image(data_store("OBXXXX1A.dcm"))  # PALETTE COLOR ultrasound
    assert palette.shape == (600, 800, 3) and len(np.unique(palette.reshape(-1, 3), axis=0)) > 20


@pytest.mark.parametrize("name, reason", [
    ("emri_small.dcm", "10 frames in one file; a 2D dataset takes single-frame images (a volume)"),
    ("MR_truncated.dcm", "truncated pixel data"),
    ("rtplan.dcm", "no pixel data (not an image)"),
])
def test_files_that_are_no_2d_image_are_bad_images_with_a_reason(name, reason, tmp_path):
    with pytest.raises(images.BadImage) as bad:
        images.open_source(bundled(name))
    assert str(bad.value) == reason
    (tmp_path / "notes.dcm").write_text("not dicom")
    with pytest.raises(images.BadImage, match="not a DICOM file"):
        images.open_source(tmp_path / "notes.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(images.BadImage, match="^empty file$"):
        images.open_source(tmp_path / "empty.dcm")


def test_dicom_is_recognised_by_content_too(tmp_path):
    unnamed = tmp_path / "IM0001"  # PACS exports often have no extension
    shutil.copy(bundled("CT_small.dcm"), unnamed)
    expected = dicom.read_image(bundled("CT_small.dcm"))
    assert np.array_equal(np.asarray(images.open_source(unnamed)), expected)
    assert np.array_equal(np.asarray(images.open_source(unnamed.read_bytes())), expected)


def test_a_folder_of_dicom_files_is_prepared_and_bad_ones_listed(tmp_path):
    root = tmp_path / "scans"
    for label, names in {"ct": ["CT_small.dcm"] * 10, "mr": ["MR_small.dcm"] * 10}.items():
        (root / label).mkdir(parents=True)
        for i, name in enumerate(names):
            shutil.copy(bundled(name), root / label / f"{i}.dcm")
    Image.new("L", (8, 8), 7).save(root / "mr" / "extra.png")  # DICOM and other images mix
    shutil.copy(bundled("CT_small.dcm"), root / "ct" / "IM0001")  # exports without a suffix, or named by UID
    shutil.copy(bundled("CT_small.dcm"), root / "ct" / "1.2.840.113619.2.55.3")
    (root / "ct" / "README").write_text("not an image")
    shutil.copy(bundled("emri_small.dcm"), root / "mr" / "multi.dcm")
    with pytest.raises(DataError, match=r"mr/multi.dcm \(10 frames in one file"):
        prepare_dataset("folder", tmp_path / "data", root, max_size=0)
    prepare_dataset("folder", tmp_path / "data", root, max_size=0, on_bad_image="skip")
    prepared = load_prepared("folder", tmp_path / "data")
    assert prepared.meta["num_examples"] == 23 and prepared.meta["skipped"][0]["file"].endswith("multi.dcm")
    assert {"ct/IM0001", "ct/1.2.840.113619.2.55.3"} <= set(prepared.position)
    reader = RecordReader(prepared.records_dir)
    position = prepared.position["ct/3.dcm"]
    stored = np.asarray(Image.open(io.BytesIO(reader.read(position)[0])).convert("L"))
    expected = dicom.read_image(bundled("CT_small.dcm"))
    assert np.abs(stored.astype(int) - expected).mean() < 2  # stored as JPEG (quality 95) in RGB
    assert pipeline.dataset_info("folder", tmp_path / "data").classes == ("ct", "mr")


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(tmp_path):
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.Rows = ds.Columns = 60000  # 3.6 gigapixels claimed, 32 KB of pixel data
    ds.save_as(tmp_path / "bomb.dcm")
    with pytest.raises(images.BadImage, match=r"^too large: 3600000000 pixels, over PIL's decompression-bomb limit"):
        images.open_source(tmp_path / "bomb.dcm")


def test_predict_stores_a_dicom_file_as_prepare_did():
    from ttlx.data.stored_form import StoredForm

    form = StoredForm(channels=1, encoding="png", max_size=64, pad_square=False)
    stored = np.asarray(Image.open(io.BytesIO(form.store(bundled("CT_small.dcm")))))
    expected = Image.fromarray(dicom.read_image(bundled("CT_small.dcm"))).resize((64, 64), Image.BILINEAR,
                                                                                 reducing_gap=3.0)
    assert stored.shape == (64, 64) and np.array_equal(stored, np.asarray(expected))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the damage it reads
def test_every_real_dicom_file_is_an_image_or_a_bad_image_with_a_reason():
    """pydicom's and pydicom-data's ~240 files (SR, RT plans, broken headers, odd syntaxes): none may raise
    anything but BadImage, and every reason is one short line."""
    folders = [Path(pydicom.__file__).parent / "data" / "test_files"]
    store = pytest.importorskip("data_store", reason="pydicom-data holds most of the files")
    folders.append(Path(store.__file__).parent / "data")
    files = [p for folder in folders for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".dcm", "")]
    assert len(files) > 200
    opened, reasons = 0, []
    for path in files:
        try:
            images.open_source(path).close()
            opened += 1
        except images.BadImage as bad:
            reasons.append(str(bad))
    assert opened > 100 and all(r and "\n" not in r and len(r) < 200 for r in reasons)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the damage it reads
def test_damaged_headers_are_bad_images_with_a_reason(tmp_path):
    """600 copies of CT_small (uncompressed) and MR_small_RLE with three header bytes changed at random
    (seeded): each opens or is a BadImage, never another exception (pydicom parses elements lazily, so
    damage surfaces on first access as ValueError, NotImplementedError, BytesLengthException, ...)."""
    sources = [bundled("MR_small_RLE.dcm").read_bytes(), bundled("CT_small.dcm").read_bytes()]
    rng = np.random.default_rng(0)
    outcomes = {"opened": 0, "bad": 0}
    for i in range(600):
        damaged = bytearray(sources[i % 2])
        for _ in range(3):
            damaged[int(rng.integers(132, 1600 if i % 2 else 1200))] = int(rng.integers(0, 256))
        (tmp_path / f"d{i}.dcm").write_bytes(bytes(damaged))
        try:
            images.open_source(tmp_path / f"d{i}.dcm").close()
            outcomes["opened"] += 1
        except images.BadImage as bad:
            assert str(bad) and "\n" not in str(bad)
            outcomes["bad"] += 1
    assert outcomes["bad"] >= 100 and outcomes["opened"] >= 100


def test_a_csv_of_dicom_files_with_patients(tmp_path):
    import csv

    rows = [["path", "label", "patient"]]
    for i in range(20):
        name = ("CT_small.dcm", "MR_small.dcm")[i % 2]
        shutil.copy(bundled(name), tmp_path / f"{i:02d}.dcm")
        rows.append([f"{i:02d}.dcm", name[:2].lower(), f"p{i // 2}"])
    with open(tmp_path / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    prepare_dataset("csv", tmp_path / "data", tmp_path, csv=tmp_path / "list.csv", name="ct_or_mr")
    prepared = load_prepared("ct_or_mr", tmp_path / "data")
    assert prepared.classes == ("ct", "mr") and prepared.meta["num_examples"] == 20
