"""NIfTI volumes: nibabel's own test files, and where a voxel lands for images stored in other orientations."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ttlx.data.nifti import NiftiError, read_nifti

DATA = Path(nib.__file__).parent / "tests" / "data"


def test_nibabels_anatomical_image_in_las_orientation():
    raw = nib.load(DATA / "anatomical.nii")  # 33 x 41 x 25, LAS+, 2 mm voxels, big-endian int16
    assert nib.aff2axcodes(raw.affine) == ("L", "A", "S")
    volume, spacing = read_nifti(DATA / "anatomical.nii")
    # LAS: x already runs to the patient's left (as DICOM columns do); y runs anterior, DICOM rows posterior
    expected = np.asarray(raw.dataobj)[:, ::-1, :].transpose(2, 1, 0)
    assert volume.shape == (25, 41, 33) and spacing == (2.0, 2.0, 2.0)
    assert np.array_equal(volume, expected)


def test_spacing_follows_the_axes():
    volume, spacing = read_nifti(DATA / "standard.nii.gz")  # 4 x 5 x 7, zooms (1, 3, 2), RAS
    assert volume.shape == (7, 5, 4) and spacing == (2.0, 3.0, 1.0)


@pytest.mark.parametrize("axes", [np.diag([1.5, 1.0, 2.5, 1]), np.diag([-1.5, -1.0, 2.5, 1]),
                                  np.diag([-1.5, 1.0, -2.5, 1])])
def test_right_anterior_superior_lands_top_left_of_the_last_slice_whatever_the_storage(tmp_path, axes):
    """Radiological layout: the patient's right at column 0, anterior at row 0, superior in the last slice."""
    data = np.zeros((6, 5, 4), np.int16)
    corner = tuple(n - 1 if a > 0 else 0 for n, a in zip(data.shape, np.diag(axes)[:3], strict=True))
    data[corner] = 700  # the voxel furthest right (+x), anterior (+y) and superior (+z) in world RAS
    nib.save(nib.Nifti1Image(data, axes), tmp_path / "v.nii.gz")
    volume, spacing = read_nifti(tmp_path / "v.nii.gz")
    assert volume.shape == (4, 5, 6) and spacing == (2.5, 1.0, 1.5)
    assert volume[-1, 0, 0] == 700 and int((volume == 700).sum()) == 1


def test_scaled_integers_come_back_whole_and_4d_is_refused(tmp_path):
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii")
    volume, _ = read_nifti(tmp_path / "scaled.nii")
    assert volume.min() == -1024 and volume.max() == 23 * 2 - 1024
    single = nib.Nifti1Image(np.ones((2, 3, 4, 1), np.int16), np.eye(4))
    nib.save(single, tmp_path / "single.nii")
    assert read_nifti(tmp_path / "single.nii")[0].shape == (4, 3, 2)
    with pytest.raises(NiftiError, match=r"^4D image of shape 128x96x24x2; a volume has three dimensions$"):
        read_nifti(DATA / "example4d.nii.gz")


@pytest.mark.parametrize("name, cut, reason", [
    ("anatomical.nii", 0.5, "truncated"), ("standard.nii.gz", 0.6, "truncated"), ("standard.nii.gz", 0.0, "empty file"),
])
def test_truncated_and_empty_files_say_so(tmp_path, name, cut, reason):
    data = (DATA / name).read_bytes()
    (tmp_path / name).write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(NiftiError, match=f"^{reason}$"):
        read_nifti(tmp_path / name)
    (tmp_path / "text.nii").write_text("not an image, a text longer than a NIfTI header. " * 30)
    with pytest.raises(NiftiError, match="^not a NIfTI file$"):
        read_nifti(tmp_path / "text.nii")


def test_damaged_headers_are_refused_with_a_reason_or_read(tmp_path):
    """300 copies of anatomical.nii with three header bytes changed at random (seeded): each one reads or
    raises NiftiError with a one-line reason, never another exception (nibabel raises a dozen kinds)."""
    source = (DATA / "anatomical.nii").read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"read": 0, "refused": 0}
    for i in range(300):
        damaged = bytearray(source)
        for _ in range(3):
            damaged[int(rng.integers(0, 352))] = int(rng.integers(0, 256))
        (tmp_path / f"d{i}.nii").write_bytes(bytes(damaged))
        try:
            read_nifti(tmp_path / f"d{i}.nii")
            outcomes["read"] += 1
        except NiftiError as err:
            assert str(err) and "\n" not in str(err)
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 10 and outcomes["read"] >= 100
