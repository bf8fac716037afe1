"""``penet`` on a generated fixture in the PENet layout: the fixed split, the PE-type filter, hostile pickles."""

import csv
import os
import pickle

import numpy as np
import pytest
from volume_fixtures import SCALED, penet_layout, write_series_list

from ttlx.data.datasets.penet_pickle import load_series_list
from ttlx.data.prepare import prepare_dataset
from ttlx.data.store import load_prepared
from ttlx.data.volumes import VolumeStore
from ttlx.errors import DataError


@pytest.fixture(scope="module")
def penet_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("penet")
    return folder, penet_layout(folder)


def _split(root, split):
    return list(csv.DictReader(open(root / "splits" / "exp1" / f"{split}.csv")))


def _counts(rows):
    return sum(r["label"] == "negative" for r in rows), sum(r["label"] == "positive" for r in rows)


def test_the_fixed_split_with_the_reference_filter(penet_dir, tmp_path):
    folder, records = penet_dir
    root = prepare_dataset("penet", tmp_path / "data", folder)
    for split, (negatives, positives, _) in SCALED.items():
        rows = _split(root, split)
        assert _counts(rows) == (negatives, positives)
        phase = {str(r["study_num"]) for r in records if r["phase"] == split}
        assert {r["id"] for r in rows} <= phase
    for exp in (2, 3):  # every repeat uses the same fixed split
        assert _split(root, "test") == list(csv.DictReader(open(root / "splits" / f"exp{exp}" / "test.csv")))
    prepared = load_prepared("penet", tmp_path / "data")
    assert prepared.meta["splits"] == "official"
    store = VolumeStore(prepared.records_dir)
    by_id = {r["study_num"]: r for r in records}
    for position, study in enumerate(prepared.index["ids"]):
        record = by_id[int(study)]
        assert store.shape(position)[0] == record["num_slices"]
        assert list(np.flatnonzero(store.slice_labels(position))) == record["pe_idxs"]
        np.testing.assert_array_equal(store.volume(position), np.load(folder / f"{study}.npy"))
    assert store.spacing(0) == (1.25, 1.0, 1.0)


def test_all_pe_types_keep_the_subsegmental_positives(penet_dir, tmp_path):
    folder, _ = penet_dir
    root = prepare_dataset("penet", tmp_path / "data", folder, pe_types="all")
    for split, (negatives, positives, dropped) in SCALED.items():
        assert _counts(_split(root, split)) == (negatives, positives + dropped)


def test_pe_types_the_data_does_not_have_are_refused(penet_dir, tmp_path):
    from ttlx.errors import ConfigError

    with pytest.raises(ConfigError, match="--pe-types lobar names none of the PE types of the data "
                                          r"\(central, segmental, subsegmental\)"):
        prepare_dataset("penet", tmp_path / "data", penet_dir[0], pe_types="lobar")


def test_a_manifest_gives_the_same_dataset(tmp_path):
    folder = tmp_path / "converted"
    records = penet_layout(folder, manifest=True)
    root = prepare_dataset("penet", tmp_path / "data", folder)
    assert sum(_counts(_split(root, "train"))) == sum(SCALED["train"][:2])
    rows = {r["id"]: r for r in csv.DictReader(open(root / "slice_labels.csv"))}
    positive = next(r for r in records if r["is_positive"] and r["type"] != "subsegmental")
    listed = rows[str(positive["study_num"])]["positive_slices"]
    assert listed and int(listed.split(";")[0].split("-")[0]) == positive["pe_idxs"][0]


def test_studies_in_one_hdf5_file_as_the_reference_stores_them(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "penet"
    records = penet_layout(folder)
    with h5py.File(folder / "data.hdf5", "w") as f:
        for r in records:
            npy = folder / f"{r['study_num']}.npy"
            f.create_dataset(str(r["study_num"]), data=np.load(npy), dtype="i2", chunks=True)
            if r["study_num"] != records[0]["study_num"]:
                npy.unlink()  # one .npy left over: data.hdf5 is what is read
    (folder / f"{records[0]['study_num']}.npy").write_bytes(b"not read")
    root = prepare_dataset("penet", tmp_path / "data", folder)
    prepared = load_prepared("penet", tmp_path / "data")
    store = VolumeStore(prepared.records_dir)
    position = prepared.position[str(records[5]["study_num"])]
    with h5py.File(folder / "data.hdf5", "r") as f:
        np.testing.assert_array_equal(store.volume(position), f[str(records[5]["study_num"])][:])
    assert _counts(_split(root, "test")) == SCALED["test"][:2]


def test_hdf5_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    folder = tmp_path / "penet"
    penet_layout(folder)
    (folder / "data.hdf5").write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(DataError, match=r"needs h5py: `pip install 'ttlx\[hdf5\]'`"):
        prepare_dataset("penet", tmp_path / "data", folder)
    assert not (tmp_path / "data" / "penet").exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_every_pickle_protocol_reads_back_as_plain_records(tmp_path, protocol):
    records = [{"study_num": 7, "slice_thickness": 1.25, "is_positive": True, "num_slices": 30, "pe_idxs": [3, 4],
                "phase": "val", "type": "central"}]
    write_series_list(tmp_path / "s.pkl", records, protocol=protocol)
    assert load_series_list(tmp_path / "s.pkl") == records


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class _Other:
    pass


@pytest.mark.parametrize("payload", ["reduce", "other_class", "inside_a_record"])
def test_hostile_pickles_are_refused_without_running_code(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    record = {"study_num": 1, "slice_thickness": 1.25, "is_positive": False, "num_slices": 3, "pe_idxs": [],
              "phase": "train", "type": ""}
    if payload == "inside_a_record":
        record["phase"] = _Exploit()
        write_series_list(tmp_path / "series_list.pkl", [record])
    else:
        write_series_list(tmp_path / "series_list.pkl", [record],
                          extra=_Exploit() if payload == "reduce" else _Other())
    with pytest.raises(DataError, match="not only PENet CTPE records"):
        load_series_list(tmp_path / "series_list.pkl")
    assert not (tmp_path / "pwned").exists()


def test_a_pickle_that_is_not_a_list_of_records_is_refused(tmp_path):
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"study_num": 1}))
    with pytest.raises(DataError, match="not a list of PENet CTPE records"):
        load_series_list(tmp_path / "a.pkl")
    (tmp_path / "b.pkl").write_bytes(pickle.dumps([1, 2])[:5])
    with pytest.raises(DataError, match="not a readable series_list.pkl"):
        load_series_list(tmp_path / "b.pkl")


def test_a_missing_layout_says_what_to_copy(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither series_list.pkl nor manifest.csv"):
        prepare_dataset("penet", tmp_path / "data", tmp_path / "empty")


def test_windows_of_the_fixture_follow_the_reference(penet_dir, tmp_path):
    import math

    from ttlx.data.pipeline import make_loader
    from ttlx.data.windows import window_label

    folder, records = penet_dir
    prepare_dataset("penet", tmp_path / "data", folder)
    prepared = load_prepared("penet", tmp_path / "data")
    test = _split(prepared.root, "test")
    slices = {str(r["study_num"]): r["num_slices"] for r in records}
    loader = make_loader("penet", tmp_path / "data", exp=1, split="test", batch_size=4, image_size=32, train=False,
                         num_workers=0)  # the default window: 24 slices
    assert len(loader.windows) == sum(math.ceil(slices[r["id"]] / 24) for r in test)
    store = VolumeStore(prepared.records_dir)
    pe = {str(r["study_num"]): r["pe_idxs"] for r in records}
    labels = []
    for record, start in zip(loader.windows.records, loader.windows.starts, strict=True):
        study = str(prepared.index["ids"][record])
        inside = sum(start <= i < start + 24 for i in pe[study])
        labels.append(window_label(store, int(record), int(prepared.index["labels"][record]), int(start), 24))
        assert labels[-1] == int(inside >= 4)
    assert 0 < sum(labels) < len(labels)
