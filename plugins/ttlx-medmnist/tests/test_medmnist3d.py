"""The six 3D MedMNIST sets on generated release files: official splits, volumes stored unchanged, sizes."""

import numpy as np
import pytest
from ttlx_medmnist.volumes3d import NODULEMNIST3D, ORGANMNIST3D, VOLUME_SETS

from ttlx.data import pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.data.store import load_prepared
from ttlx.data.volumes import VolumeStore
from ttlx.errors import ConfigError, DataError
from ttlx.registry import datasets

SIZES = {"train": 14, "val": 6, "test": 7}


def write_release_3d(path, classes: int, side=28):
    """A .npz laid out like the 3D MedMNIST release: <split>_images uint8 (N,D,H,W), <split>_labels (N,1)."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, side, side, side), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def registered():
    for spec in VOLUME_SETS:
        datasets.register(spec.name, spec, package="ttlx-medmnist")
    yield
    for spec in VOLUME_SETS:
        datasets.unregister(spec.name)


def test_the_six_sets_with_medmnists_class_lists():
    assert [s.name for s in VOLUME_SETS] == ["organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d",
                                             "vesselmnist3d", "synapsemnist3d"]
    assert all(s.volumetric and s.official_splits and s.channels == 1 for s in VOLUME_SETS)
    assert [len(s.classes) for s in VOLUME_SETS] == [11, 2, 2, 3, 2, 2]
    assert ORGANMNIST3D.classes[:3] == ("liver", "kidney-right", "kidney-left")  # not the 2D organ order


def test_organmnist3d_keeps_the_official_split_and_the_voxels(tmp_path, registered):
    arrays = write_release_3d(tmp_path / "mm" / "organmnist3d.npz", classes=11)
    prepare_dataset("OrganMNIST3D", tmp_path / "data", tmp_path / "mm")
    prepared = load_prepared("organmnist3d", tmp_path / "data")
    for exp in (1, 2, 3):
        for split, n in SIZES.items():
            ids = pipeline.split_ids("organmnist3d", tmp_path / "data", exp=exp, split=split)
            assert ids == [f"{split}_{i:06d}" for i in range(n)]
    store = VolumeStore(prepared.records_dir)
    position = prepared.position["val_000004"]
    assert store.shape(position) == (28, 28, 28)
    assert np.array_equal(store.volume(position), arrays["val_images"][4].astype(np.int16))
    assert store.intensity_window == (0.0, 255.0)  # uint8 voxels scaled to [0, 1], not through the CT window
    labels = prepared.index["labels"]
    assert labels[prepared.position["test_000005"]] == arrays["test_labels"][5, 0]
    assert pipeline.dataset_info("organmnist3d", tmp_path / "data").classes[10] == "pancreas"


def test_the_64_voxel_release_and_its_refusals(tmp_path, registered):
    write_release_3d(tmp_path / "mm" / "nodulemnist3d_64.npz", classes=2, side=64)
    prepare_dataset("nodulemnist3d", tmp_path / "data", tmp_path / "mm", size=64)
    store = VolumeStore(load_prepared("nodulemnist3d", tmp_path / "data").records_dir)
    assert store.shape(0) == (64, 64, 64)
    with pytest.raises(ConfigError, match="--size for nodulemnist3d must be one of 28, 64, got 128"):
        prepare_dataset("nodulemnist3d", tmp_path / "other", tmp_path / "mm", size=128)
    np.savez(tmp_path / "mm" / "nodulemnist3d.npz", **{f"{s}_{k}": np.zeros((3, 28, 28), np.uint8)
                                                       for s in SIZES for k in ("images", "labels")})
    with pytest.raises(DataError, match=r"has train images of shape \(3, 28, 28\), not \(N, depth, height, width\)"):
        NODULEMNIST3D.scan(tmp_path / "mm", size=28)
    with pytest.raises(DataError, match=r"adrenalmnist3d.npz is missing; download adrenalmnist3d.npz from"):
        prepare_dataset("adrenalmnist3d", tmp_path / "data", tmp_path / "mm")
