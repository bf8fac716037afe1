"""Volumes stored once: synthetic3d end to end, windows read from the map, bad volumes, interrupted builds."""

import csv
import json

import numpy as np
import pytest

from ttlx.data.datasets.synthetic3d import synthetic_volume
from ttlx.data.prepare import prepare_dataset
from ttlx.data.spec import Catalog, DatasetSpec, Example
from ttlx.data.store import load_prepared
from ttlx.data.volumes import AIR_HU, Volume, VolumeStore, shrink
from ttlx.errors import DataError
from ttlx.registry import datasets


@pytest.fixture(scope="module")
def synth3d(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    return prepare_dataset("synthetic3d", data_dir, count=20, slices=12, size=16)


def test_synthetic3d_is_stored_as_int16_with_spacing_and_slice_labels(synth3d):
    meta = json.loads((synth3d / "prepared.json").read_text())
    assert meta["num_examples"] == 20 and meta["classes"] == ["negative", "positive"]
    store = VolumeStore(synth3d / meta["records"])
    assert len(store) == 20 and store.shape(3) == (12, 16, 16) and store.intensity_window == (-100.0, 900.0)
    expected = synthetic_volume(3, 12, 16)  # the ids are in catalog order: study 3 is position 3
    np.testing.assert_array_equal(store.volume(3), expected.hu)
    assert store.spacing(3) == expected.spacing
    assert tuple(np.flatnonzero(store.slice_labels(3))) == expected.positive_slices
    assert expected.positive_slices and not store.slice_labels(2).any()  # odd studies hold the finding
    rows = list(csv.DictReader(open(synth3d / "slice_labels.csv")))
    assert rows[3]["id"] == "study_00003" and rows[3]["slices"] == "12" and rows[2]["positive_slices"] == ""
    first, last = expected.positive_slices[0], expected.positive_slices[-1]
    assert rows[3]["positive_slices"] == (f"{first}-{last}" if last > first else str(first))


def test_windows_beyond_a_study_are_air(synth3d):
    store = VolumeStore(synth3d / "records")
    study = store.volume(5)
    window = store.window(5, -3, 8)
    assert window.shape == (8, 16, 16) and window.dtype == np.int16
    assert (window[:3] == AIR_HU).all()
    np.testing.assert_array_equal(window[3:], study[:5])
    tail = store.window(5, 10, 8)
    np.testing.assert_array_equal(tail[:2], study[10:])
    assert (tail[2:] == AIR_HU).all()


def test_the_store_pickles_as_its_path(synth3d):
    import pickle

    store = VolumeStore(synth3d / "records")
    store.window(0, 0, 4)
    again = pickle.loads(pickle.dumps(store))
    assert again._voxels is None
    np.testing.assert_array_equal(again.window(1, 2, 4), store.window(1, 2, 4))


def test_shrink_keeps_the_aspect_and_averages():
    hu = np.zeros((2, 40, 30), np.int16)
    hu[:, :20] = 100
    out = shrink(hu, 20)
    assert out.shape == (2, 20, 15) and out.dtype == np.int16
    assert (out[:, :10] == 100).all() and (out[:, 10:] == 0).all()
    np.testing.assert_array_equal(shrink(hu, 0), hu)
    np.testing.assert_array_equal(shrink(hu, 64), hu)


class _Volumes(DatasetSpec):
    name = "volumes_test"
    volumetric = True
    channels = 1
    needs_manual_dir = False
    max_size = 0
    examples: dict = {}

    def scan(self, manual_dir=None):
        items = enumerate(self.examples.items())
        return Catalog(("a", "b"), [Example(id=k, label=i % 2, image=v) for i, (k, v) in items])


@pytest.fixture
def volumes_test(tmp_path):
    spec = _Volumes()
    good = {f"good{i}": Volume(np.full((4, 8, 8), i, np.int16), (2.0, 0.5, 0.5)) for i in range(10)}
    truncated = tmp_path / "cut.npy"
    np.save(truncated, np.zeros((4, 8, 8), np.int16))
    truncated.write_bytes(truncated.read_bytes()[:200])
    spec.examples = {**good, "cut": truncated, "float": lambda: np.zeros((4, 8, 8), np.float32),
                     "empty": np.zeros((0, 8, 8), np.int16), "flat": np.zeros((8, 8), np.int16)}
    datasets.register("volumes_test", spec, package="tests")
    yield spec
    datasets.unregister("volumes_test")


def test_bad_volumes_are_listed_by_name_and_stop_the_build(volumes_test, tmp_path):
    with pytest.raises(DataError) as err:
        prepare_dataset("volumes_test", tmp_path / "data")
    message = str(err.value)
    for name in ("cut.npy (not a complete .npy file", "float (float32 voxels", "empty (empty volume",
                 "flat (not a 3D volume"):
        assert name in message
    assert "--on-bad-image skip" in message
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_skipped_volumes_are_recorded(volumes_test, tmp_path):
    volumes_test.intensity_window = (0.0, 255.0)  # not CT: the values the loader scales to [0, 1]
    root = prepare_dataset("volumes_test", tmp_path / "data", on_bad_image="skip")
    prepared = load_prepared("volumes_test", tmp_path / "data")
    assert prepared.meta["num_examples"] == 10 and len(prepared.meta["skipped"]) == 4
    store = VolumeStore(prepared.records_dir)
    assert [int(store.volume(p)[0, 0, 0]) for p in range(10)] == list(range(10))
    assert store.spacing(0) == (2.0, 0.5, 0.5) and store.slice_labels(0) is None
    assert store.intensity_window == (0.0, 255.0)
    assert len(list(csv.DictReader(open(root / "skipped.csv")))) == 4


def test_an_interrupted_build_leaves_nothing_that_looks_prepared(volumes_test, tmp_path):
    def interrupt():
        raise KeyboardInterrupt

    volumes_test.examples = {**{f"v{i}": np.zeros((2, 4, 4), np.int16) for i in range(20)}, "stop": interrupt}
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("volumes_test", tmp_path / "data")
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())
