"""`ttlx prepare volumes`: a user's own NIfTI files, DICOM series and .npy volumes, by folder or CSV."""

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_dicom_series import ct_series

from ttlx.data import pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.data.store import load_prepared
from ttlx.data.volumes import VolumeStore
from ttlx.errors import ConfigError, DataError


def _nifti(path, value, shape=(12, 10, 5), zooms=(0.8, 0.8, 3.0)):
    """A RAS volume (x, y, z) of ``value`` HU with one brighter voxel, saved as NIfTI."""
    data = np.full(shape, value, np.int16)
    data[-1, -1, -1] = value + 100
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)


def _npy(path, value, dtype=np.int16, shape=(4, 10, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.full(shape, value, dtype))


@pytest.fixture
def studies(tmp_path):
    """10 negative and 10 positive studies: 4 NIfTI, 3 .npy and 3 DICOM series per class."""
    root = tmp_path / "studies"
    for label, value in (("negative", -100), ("positive", 300)):
        for i in range(4):
            _nifti(root / label / f"nii_{i}.nii.gz", value + i)
        for i in range(3):
            _npy(root / label / "arrays" / f"vol_{i}.npy", value + i)
            ct_series(root / label / f"series_{i}", [0.0, 5.0, 10.0])
    return root


def test_a_folder_of_nifti_npy_and_dicom_series_is_stored_with_its_spacing(studies, tmp_path):
    root = prepare_dataset("volumes", tmp_path / "data", studies, max_size=0)
    prepared = load_prepared("volumes", tmp_path / "data")
    assert prepared.classes == ("negative", "positive") and prepared.meta["num_examples"] == 20
    store = VolumeStore(prepared.records_dir)
    nii = prepared.position["positive/nii_2.nii.gz"]
    assert store.shape(nii) == (5, 10, 12) and store.spacing(nii) == pytest.approx((3.0, 0.8, 0.8))
    assert store.volume(nii)[-1, 0, 0] == 402 and int((store.volume(nii) == 302).sum()) == 5 * 10 * 12 - 1
    series = prepared.position["negative/series_1"]
    assert store.shape(series) == (3, 128, 128) and store.spacing(series)[0] == pytest.approx(5.0)
    npy = prepared.position["negative/arrays/vol_2.npy"]
    assert store.shape(npy) == (4, 10, 12) and np.all(store.volume(npy) == -98)
    with open(root / "splits" / "exp1" / "test.csv", newline="") as f:
        assert {row["label"] for row in csv.DictReader(f)} == {"negative", "positive"}
    # the three DICOM series of a class share CT_small's PatientID, so they share a split
    for exp in (1, 2, 3):
        where = {s: set(pipeline.split_ids("volumes", tmp_path / "data", exp=exp, split=s))
                 for s in ("train", "val", "test")}
        homes = [s for s, ids in where.items() if {"negative/series_0", "positive/series_2"} & ids]
        assert len(homes) == 1


def test_bad_volumes_are_listed_by_name_and_stop_the_build_unless_skipped(studies, tmp_path):
    bad = studies / "positive"
    data = (bad / "nii_0.nii.gz").read_bytes()
    (bad / "cut.nii.gz").write_bytes(data[: len(data) // 2])  # truncated
    _npy(bad / "float.npy", 0.5, dtype=np.float32)  # wrong dtype
    _npy(bad / "empty.npy", 0, shape=(0, 10, 12))  # empty
    _nifti(bad / "fraction.nii", 0)
    image = nib.load(bad / "fraction.nii")
    nib.save(nib.Nifti1Image(image.get_fdata().astype(np.float32) + 0.25, image.affine), bad / "fraction.nii")
    ct_series(bad / "gappy", [0.0, 5.0, 15.0, 20.0])  # a missing slice
    ct_series(bad / "uneven", [0.0, 5.0, 7.0, 12.0])  # inconsistent spacing
    with pytest.raises(DataError) as stopped:
        prepare_dataset("volumes", tmp_path / "data", studies, max_size=0)
    message = str(stopped.value)
    assert message.startswith("6 volume(s) of 'volumes' could not be read: ")
    for name, why in [("positive/cut.nii.gz", "truncated"), ("positive/float.npy", "float32 voxels"),
                      ("positive/empty.npy", "empty volume"), ("positive/fraction.nii", "float32 voxels with "
                      "fractions"), ("positive/gappy", "1 missing slice(s) between"),
                      ("positive/uneven", "inconsistent slice spacing")]:
        assert f"{name} ({why}" in message
    assert message.endswith("or pass --on-bad-image skip to leave them out.")
    assert not (tmp_path / "data" / "volumes").exists()
    prepare_dataset("volumes", tmp_path / "data", studies, max_size=0, on_bad_image="skip")
    meta = load_prepared("volumes", tmp_path / "data").meta
    assert meta["num_examples"] == 20 and len(meta["skipped"]) == 6


def test_a_csv_of_volumes_groups_by_its_patient_column_under_a_name(studies, tmp_path):
    rows = [["file", "diagnosis", "patient_id"]]
    for label in ("negative", "positive"):
        for i in range(4):
            rows.append([f"{label}/nii_{i}.nii.gz", label, f"{label}_p{i}"])
        for i in range(3):
            rows.append([f"{label}/series_{i}", label, f"{label}_p{i}"])
    with open(tmp_path / "studies.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    prepare_dataset("volumes", tmp_path / "data", studies, csv=tmp_path / "studies.csv", name="chest_ct", max_size=64)
    meta = json.loads((tmp_path / "data" / "chest_ct" / "prepared.json").read_text())
    assert (meta["name"], meta["dataset"], meta["num_examples"]) == ("chest_ct", "volumes", 14)
    store = VolumeStore(load_prepared("chest_ct", tmp_path / "data").records_dir)
    series = load_prepared("chest_ct", tmp_path / "data").position["negative/series_0"]
    assert store.shape(series) == (3, 64, 64)  # 128 px slices shrunk to --max-size 64
    assert store.spacing(series)[1] == pytest.approx(0.661468 * 2)
    for exp in (1, 2, 3):  # a patient's volumes of both kinds stay in one split
        homes = {}
        for split in ("train", "val", "test"):
            for study in pipeline.split_ids("chest_ct", tmp_path / "data", exp=exp, split=split):
                patient = study.split("_")[-1].split(".")[0]
                homes.setdefault((study.split("/")[0], patient), set()).add(split)
        assert all(len(splits) == 1 for splits in homes.values())


def test_an_mri_intensity_window_is_recorded_for_the_loader(studies, tmp_path):
    ct = prepare_dataset("volumes", tmp_path / "ct", studies, max_size=0)
    assert VolumeStore(load_prepared(ct.name, tmp_path / "ct").records_dir).intensity_window == (-100.0, 900.0)
    mri = prepare_dataset("volumes", tmp_path / "mri", studies, max_size=0, intensity_window="0,2000")
    assert VolumeStore(load_prepared(mri.name, tmp_path / "mri").records_dir).intensity_window == (0.0, 2000.0)
    for bad in ("2000,0", "0", "a,b", "0,inf"):
        with pytest.raises(ConfigError, match=f"--intensity-window must be two numbers LOW,HIGH with LOW < HIGH "
                                              rf"\(e\.g\. 0,2000 for an MRI series\), got '{bad}'\."):
            prepare_dataset("volumes", tmp_path / "bad", studies, intensity_window=bad)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_loose_dicom_files_and_folders_without_volumes(studies, tmp_path):
    shutil.copy(next((studies / "negative" / "series_0").iterdir()), studies / "negative" / "loose.dcm")
    with pytest.raises(DataError, match=r"negative holds single-slice DICOM files directly \(loose.dcm\); put each "
                                        r"series in a folder of its own"):
        prepare_dataset("volumes", tmp_path / "data", studies)
    with pytest.raises(DataError, match="has no sub-folders; put the volumes of each class in a sub-folder"):
        prepare_dataset("volumes", tmp_path / "data", studies / "negative" / "arrays")


@pytest.mark.slow
def test_named_nifti_studies_train_and_evaluate_from_the_command_line(tmp_path, tinynet3d):
    from typer.testing import CliRunner

    from ttlx.cli import app

    for label, value in (("normal", -50), ("lesion", 250)):
        for i in range(10):
            _nifti(tmp_path / "studies" / label / f"s{i}.nii.gz", value + 5 * i, shape=(32, 32, 8))
    data, run = tmp_path / "data", tmp_path / "run"
    prepared = CliRunner().invoke(app, ["prepare", "volumes", "--manual-dir", str(tmp_path / "studies"),
                                        "--name", "brain_mr", "--data-dir", str(data)])
    assert prepared.exit_code == 0, prepared.output
    trained = CliRunner().invoke(app, [
        "train", "--dataset", "brain_mr", "--model", "tinynet3d", "--trunc", "-1", "--pretrained", "random",
        "--head", "pool", "--image-size", "32", "--window", "4", "--bs", "4", "--max_epoch", "1", "--num_workers",
        "0", "--data-dir", str(data), "--workdir", str(run), "--no-progress", "--test", "--bootstrap", "0"])
    assert trained.exit_code == 0, trained.output
    result = json.loads((run / "eval_test.json").read_text())
    assert result["level"] == "study" and result["num_examples"] == 4  # 20% of 20 studies
    assert result["windows"] == 2 * 4  # 8 slices in windows of 4


def test_an_enhanced_multi_frame_file_in_a_class_folder_is_a_volume(studies, tmp_path):
    store = pytest.importorskip("data_store", reason="pydicom-data holds the Enhanced CT file")
    data = Path(store.__file__).parent / "data"
    shutil.copy(data / "eCT_Supplemental.dcm", studies / "positive" / "enhanced.dcm")
    shutil.copy(data / "emri_small.dcm", studies / "negative" / "no_positions.dcm")
    with pytest.raises(DataError, match=r"negative/no_positions.dcm \(10 frame\(s\) without per-frame positions"):
        prepare_dataset("volumes", tmp_path / "data", studies, max_size=128)
    (studies / "negative" / "no_positions.dcm").unlink()
    prepared = load_prepared(prepare_dataset("volumes", tmp_path / "data", studies, max_size=128).name,
                             tmp_path / "data")
    position = prepared.position["positive/enhanced.dcm"]
    volumes = VolumeStore(prepared.records_dir)
    assert volumes.shape(position) == (2, 128, 128)
    assert volumes.spacing(position) == pytest.approx((10.0, 0.388672 * 4, 0.388672 * 4))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the damage it reads
def test_every_real_dicom_file_alone_or_mixed_in_a_folder_is_a_volume_or_a_bad_volume(tmp_path):
    """pydicom's and pydicom-data's files as multi-frame volumes, and unrelated files mixed as one "series":
    the reader names a reason (BadVolume) or gives a volume, and never raises anything else."""
    import pydicom

    from ttlx.data.datasets.volumes import VolumeFile
    from ttlx.data.volumes import BadVolume, checked

    store = pytest.importorskip("data_store", reason="pydicom-data holds most of the files")
    folders = [Path(pydicom.__file__).parent / "data" / "test_files", Path(store.__file__).parent / "data"]
    files = [p for folder in folders for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".dcm", "")]
    mixed = []
    for start in range(0, len(files), 3):
        mixed.append(tmp_path / f"mix{start}")
        mixed[-1].mkdir()
        for path in files[start:start + 3]:
            shutil.copy(path, mixed[-1] / path.name)
    volumes = 0
    for source in files + mixed:
        try:
            checked(VolumeFile(source))
            volumes += 1
        except BadVolume as bad:
            assert str(bad) and "\n" not in str(bad)
    assert volumes >= 3  # eCT_Supplemental and the enhanced MR/CT files that carry positions
