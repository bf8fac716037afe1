"""The MedMNIST plugin on generated release files: official splits, labels, channels, entry points."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import ttlx_medmnist

from ttlx.data import pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.errors import ConfigError, DataError
from ttlx.registry import datasets

SIZES = {"train": 21, "val": 7, "test": 7}


def write_release(path: Path, channels: int, classes: int, multilabel=False, side=28):
    """A .npz laid out like the MedMNIST release: <split>_images uint8 (N,H,W[,3]), <split>_labels (N,1|C)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        shape = (n, side, side, 3) if channels == 3 else (n, side, side)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if multilabel:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, classes)).astype(np.uint8)
        else:
            arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def registered():
    for spec in (ttlx_medmnist.DERMAMNIST, ttlx_medmnist.CHESTMNIST):
        datasets.register(spec.name, spec, package="ttlx-medmnist")
    yield
    for spec in (ttlx_medmnist.DERMAMNIST, ttlx_medmnist.CHESTMNIST):
        datasets.unregister(spec.name)


def test_dermamnist_keeps_the_official_split_in_every_repeat(tmp_path, registered):
    arrays = write_release(tmp_path / "mm" / "dermamnist.npz", channels=3, classes=7)
    prepare_dataset("DermaMNIST", tmp_path / "data", tmp_path / "mm")
    for exp in (1, 2, 3):
        for split, n in SIZES.items():
            ids = pipeline.split_ids("dermamnist", tmp_path / "data", exp=exp, split=split)
            assert ids == [f"{split}_{i:06d}" for i in range(n)]
    info = pipeline.dataset_info("dermamnist", tmp_path / "data")
    assert info.classes[4] == "melanoma" and info.channels == 3 and not info.multilabel
    batch = next(iter(pipeline.make_loader("dermamnist", tmp_path / "data", exp=1, split="val", batch_size=7,
                                           image_size=28, train=False)))  # fmt: skip
    np.testing.assert_array_equal(batch["label"], arrays["val_labels"][:, 0])
    # Stored losslessly and 28 -> 32 -> centre 28 is not the identity, so compare the resize of the source.
    from PIL import Image

    source = np.asarray(Image.fromarray(arrays["val_images"][3]).resize((32, 32), Image.BILINEAR))[2:30, 2:30]
    expected = (source / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(batch["image"][3], expected, atol=1e-5)


def test_chestmnist_is_multilabel_with_14_findings(tmp_path, registered):
    arrays = write_release(tmp_path / "mm" / "chestmnist_64.npz", channels=1, classes=14, multilabel=True, side=64)
    prepare_dataset("chestmnist", tmp_path / "data", tmp_path / "mm", size=64)
    info = pipeline.dataset_info("ChestMNIST", tmp_path / "data")
    assert info.multilabel and len(info.classes) == 14 and info.channels == 1
    batch = next(iter(pipeline.make_loader("chestmnist", tmp_path / "data", exp=2, split="test", batch_size=7,
                                           image_size=32, train=False)))  # fmt: skip
    np.testing.assert_array_equal(batch["label"], arrays["test_labels"].astype(np.float32))
    assert batch["label_mask"].min() == 1.0


def test_missing_file_wrong_size_and_foreign_npz(tmp_path, registered):
    with pytest.raises(DataError, match=r"dermamnist.npz is missing; download dermamnist.npz from https://zenodo"):
        prepare_dataset("dermamnist", tmp_path / "data", tmp_path / "mm")
    with pytest.raises(ConfigError, match="--size for dermamnist must be one of 28, 64, 128, 224, got 100"):
        prepare_dataset("dermamnist", tmp_path / "data", tmp_path / "mm", size=100)
    (tmp_path / "mm").mkdir()
    np.savez(tmp_path / "mm" / "dermamnist.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="lacks train_images, train_labels, val_images"):
        prepare_dataset("dermamnist", tmp_path / "data", tmp_path / "mm")


def test_labels_outside_the_classes_are_refused(tmp_path, registered):
    arrays = write_release(tmp_path / "mm" / "dermamnist.npz", channels=3, classes=7)
    arrays["test_labels"][0, 0] = 9
    np.savez(tmp_path / "mm" / "dermamnist.npz", **arrays)
    with pytest.raises(DataError, match="has test labels that do not fit the 7 classes of dermamnist"):
        prepare_dataset("dermamnist", tmp_path / "data", tmp_path / "mm")


def test_every_entry_point_names_a_spec_of_the_same_name():
    import tomllib

    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        entry_points = tomllib.load(f)["project"]["entry-points"]["ttlx.datasets"]
    assert len(entry_points) == 18  # 12 2D sets and 6 3D sets
    for name, target in entry_points.items():
        module, attribute = target.split(":")
        spec = getattr(importlib.import_module(module), attribute)
        assert spec.name == name and spec.aliases[0].lower() == name
