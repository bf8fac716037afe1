"""DICOM series as volumes: sorting along the slice normal, spacing from the positions, and the refusals.

The series are real files: nibabel's two-slice Siemens MR series (``nicom/tests/data/0.dcm``, ``1.dcm``,
slightly oblique) and series made from pydicom's ``CT_small.dcm`` by rewriting only the position, instance
number and pixel values of each copy (every other header field stays the real one).
"""

import shutil
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest

from ttlx.data import dicom

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
NIBABEL_SERIES = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


def ct_series(folder: Path, heights, *, names=None, orientation=None, series_uid=None, rescale=None) -> Path:
    """Copies of CT_small at the given heights (mm along z); slice k's pixels are CT_small's plus 10 * k."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, z in enumerate(heights):
        ds = pydicom.dcmread(CT_SMALL)
        ds.ImagePositionPatient = [-158.135803, -179.035797, float(z)]
        ds.InstanceNumber = len(heights) - k  # the opposite of the position order: sorting must not use it
        if orientation is not None and k == 0:
            ds.ImageOrientationPatient = orientation
        if series_uid is not None and k == 0:
            ds.SeriesInstanceUID = series_uid
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.PixelData = (ds.pixel_array + 10 * k).astype(np.int16).tobytes()
        name = names[k] if names else f"slice_{(k * 7) % len(heights):03d}.dcm"  # file order != position order
        ds.save_as(folder / name)
    return folder


def test_a_real_oblique_mr_series_takes_its_spacing_from_the_positions(tmp_path):
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(NIBABEL_SERIES / name, tmp_path / name)
    volume, spacing = dicom.read_series(tmp_path)
    headers = [pydicom.dcmread(NIBABEL_SERIES / n) for n in ("0.dcm", "1.dcm")]
    row, col = (np.asarray(headers[0].ImageOrientationPatient[i:i + 3], float) for i in (0, 3))
    normal = np.cross(row, col) / np.linalg.norm(np.cross(row, col))
    gap = abs(np.dot(np.subtract(headers[1].ImagePositionPatient, headers[0].ImagePositionPatient), normal))
    assert volume.shape == (2, 256, 256)
    assert spacing[0] == pytest.approx(gap, rel=1e-9) and spacing[0] == pytest.approx(3.0, rel=1e-4)
    assert spacing[1:] == tuple(float(v) for v in headers[0].PixelSpacing)
    order = sorted(headers, key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    for k, ds in enumerate(order):
        assert np.array_equal(volume[k], ds.pixel_array.astype(np.float64))  # no rescale in these files


def test_slices_are_sorted_by_position_and_rescaled(tmp_path):
    ct_series(tmp_path, [-40.0, -37.5, -35.0, -32.5, -30.0][::-1], rescale=(2, -1024))
    volume, spacing = dicom.read_series(tmp_path)
    raw = pydicom.dcmread(CT_SMALL).pixel_array.astype(np.float64)
    assert spacing == pytest.approx((2.5, 0.661468, 0.661468))
    # heights were given top down, so slice k (from the bottom) is the copy with pixels + 10 * (4 - k)
    for k in range(5):
        assert np.array_equal(volume[k], (raw + 10 * (4 - k)) * 2 - 1024)


@pytest.mark.parametrize("heights, message", [
    ([0, 2.5, 5, 10, 12.5], r"^1 missing slice\(s\) between \S+ and \S+ \(5.00 and 10.00 mm\), the slice spacing "
                            r"being 2.5 mm$"),
    ([0, 2.5, 5, 12.5, 15], r"^2 missing slice\(s\) between"),
    ([0, 2.5, 5, 6.5, 9], r"^inconsistent slice spacing: 1.5 mm between \S+ and \S+ \(5.00 and 6.50 mm\), 2.5 mm "
                          r"elsewhere$"),
    ([0, 2.5, 2.5, 5], r"^two slices at the same position 2.50 mm"),
])
def test_gaps_and_uneven_steps_refuse_the_series_by_position(tmp_path, heights, message):
    ct_series(tmp_path, heights)
    with pytest.raises(dicom.DicomError, match=message):
        dicom.read_series(tmp_path)


def test_rounding_in_the_positions_is_not_a_gap(tmp_path):
    ct_series(tmp_path, [0, 1.2501, 2.4999, 3.7502, 5.0])
    assert dicom.read_series(tmp_path)[1][0] == pytest.approx(1.25, abs=1e-3)


def test_mixed_series_orientations_and_missing_positions_are_refused(tmp_path):
    ct_series(tmp_path / "two", [0, 2, 4], series_uid="1.2.3.4")
    with pytest.raises(dicom.DicomError, match=r"^2 series in one folder \(SeriesInstanceUID\); put each series"):
        dicom.read_series(tmp_path / "two")
    ct_series(tmp_path / "tilted", [0, 2, 4], orientation=[1, 0, 0, 0, 0.8, 0.6])
    with pytest.raises(dicom.DicomError, match="different orientations"):
        dicom.read_series(tmp_path / "tilted")
    ct_series(tmp_path / "nopos", [0, 2, 4])
    ds = pydicom.dcmread(tmp_path / "nopos" / "slice_000.dcm")
    del ds.ImagePositionPatient
    ds.save_as(tmp_path / "nopos" / "slice_000.dcm")
    with pytest.raises(dicom.DicomError, match=r"^slices without ImagePositionPatient/ImageOrientationPatient: "
                                               r"slice_000.dcm$"):
        dicom.read_series(tmp_path / "nopos")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(dicom.DicomError, match="^no DICOM files in the folder$"):
        dicom.read_series(tmp_path / "empty")


def test_files_without_a_dcm_name_are_found_by_their_magic(tmp_path):
    ct_series(tmp_path, [0, 5, 10], names=["IM0001", "IM0002", "IM0003"])
    (tmp_path / "DICOMDIR.txt").write_text("an index a viewer left")
    volume, spacing = dicom.read_series(tmp_path)
    assert volume.shape == (3, 128, 128) and spacing[0] == pytest.approx(5.0)


def _data_store(name: str) -> Path:
    store = pytest.importorskip("data_store", reason="pydicom-data (pip install 'ttlx[test]') holds this file")
    return Path(store.__file__).parent / "data" / name


def test_an_enhanced_ct_file_is_one_volume_with_its_functional_groups():
    from ttlx.data.dicom_frames import read_frames

    path = _data_store("eCT_Supplemental.dcm")  # Enhanced CT, 2 frames at z -159 and -149, rescale in a group
    volume, spacing = read_frames(path)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    # orientation rows along -x, columns along +y: the normal is -z, so z = -149 comes first along it
    assert spacing == pytest.approx((10.0, 0.388672, 0.388672))
    assert np.array_equal(volume, raw[[1, 0]] - 1024)


def test_a_multi_frame_file_without_positions_is_refused():
    from ttlx.data.dicom_frames import read_frames

    with pytest.raises(dicom.DicomError, match=r"^10 frame\(s\) without per-frame positions"):
        read_frames(_data_store("emri_small.dcm"))


def test_rescaled_values_outside_int16_are_refused_by_slice(tmp_path):
    ct_series(tmp_path, [0, 2, 4], rescale=(100, 0))  # CT_small's values times 100 leave int16
    with pytest.raises(dicom.DicomError, match=r"^slice_\d+.dcm holds values -?\d+\.\.\d+, outside int16$"):
        dicom.read_series(tmp_path)
