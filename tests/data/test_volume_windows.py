"""Windows of volumes: sampling, labels, the HU window and augmentation, seeded and resumable batches."""

import numpy as np
import pytest

from ttlx.data import augment3d
from ttlx.data.labels import LabelPolicy
from ttlx.data.pipeline import make_loader
from ttlx.data.prepare import prepare_dataset
from ttlx.data.split_files import split_positions
from ttlx.data.store import load_prepared
from ttlx.data.volumes import VolumeStore
from ttlx.data.windows import LoadWindow, WindowTable, split_windows, window_label

SLICES, SIZE, WINDOW = 20, 16, 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    prepare_dataset("synthetic3d", data_dir, count=20, slices=SLICES, size=SIZE)
    return data_dir


def _loader(data_dir, **options):
    defaults = dict(exp=1, split="train", batch_size=2, image_size=12, train=True, seed=3, num_workers=0,
                    window=WINDOW)
    return make_loader("synthetic3d", data_dir, **{**defaults, **options})


def test_the_hu_window_and_the_reference_mean():
    np.testing.assert_allclose(augment3d.normalize(np.array([-1000, -100, 400, 900, 3000])),
                               np.array([0, 0, 0.5, 1, 1]) - 0.15897, rtol=1e-6)


def test_eval_windows_are_consecutive_and_cover_every_study(data_dir):
    prepared = load_prepared("synthetic3d", data_dir)
    loader = _loader(data_dir, split="test", train=False, batch_size=3)
    batches = list(loader)
    ids = np.concatenate([b["id"][b["mask"] > 0] for b in batches])
    starts = np.concatenate([b["start"][b["mask"] > 0] for b in batches])
    per_study = -(-SLICES // WINDOW)  # 3 windows of 8 slices over 20: 0, 8, 16 (the last padded with air)
    assert len(ids) == per_study * loader.num_examples // per_study == len(loader.windows)
    assert list(starts[:per_study]) == [0, 8, 16] and len(set(ids)) * per_study == len(ids)
    expected_ids, expected_starts = split_windows(prepared, split_positions(prepared, exp=1, split="test"), WINDOW)
    assert list(ids) == list(expected_ids) and list(starts) == list(expected_starts)
    image = batches[0]["image"]
    assert image.shape == (3, WINDOW, 12, 12, 1) and image.dtype == np.float32
    last = [b for b in batches if (b["start"] == 16).any()][0]
    padded = last["image"][list(last["start"]).index(16)]
    np.testing.assert_allclose(padded[SLICES - 16:], -0.15897, rtol=1e-5)  # air beyond the last slice


def test_a_window_is_positive_from_four_positive_slices(data_dir):
    prepared = load_prepared("synthetic3d", data_dir)
    store = VolumeStore(prepared.records_dir)
    record = int(np.flatnonzero(prepared.index["labels"] == 1)[0])
    pe = np.flatnonzero(store.slice_labels(record))
    assert len(pe) >= 4
    assert window_label(store, record, 1, int(pe[0]) - WINDOW + 4, WINDOW) == 1
    assert window_label(store, record, 1, int(pe[0]) - WINDOW + 3, WINDOW) == 0
    assert window_label(store, record - 1, 0, 0, WINDOW) == 0


def test_positive_windows_are_centred_on_the_positive_slices(data_dir):
    prepared = load_prepared("synthetic3d", data_dir)
    store = VolumeStore(prepared.records_dir)
    records = np.arange(len(store))
    table = WindowTable.of(store, records, WINDOW)
    labels, ids = prepared.index["labels"], prepared.index["ids"]

    def load(p):
        return LoadWindow(store, table, labels, ids, LabelPolicy(False), window=WINDOW, image_size=12, train=True,
                          seed=0, positive_p=p)

    always, never = load(1.0), load(0.0)
    for position in range(40):
        record, start, _ = always.choose(position, position % len(table))
        pe = np.flatnonzero(store.slice_labels(record))
        assert labels[record] == 1 and start <= pe[-1] and start + WINDOW > pe[0]
        assert 0 <= start <= SLICES - WINDOW
    records_drawn = {never.choose(p, p % len(table))[0] for p in range(60)}
    assert any(labels[r] == 0 for r in records_drawn)  # without oversampling the negatives come too
    starts = [never.choose(p, 0)[1] for p in range(60)]
    assert min(starts) == 0 and max(starts) == WINDOW // 2  # jitter of +-4 around 0, kept inside the study


def test_training_augmentation_flips_and_rotates_from_the_generator():
    window = np.full((2, 13, 13), -1000, np.int16)
    window[:, 3:10, 5:8] = 400
    outs = [augment3d.train_window(window, 12, np.random.default_rng(s)) for s in range(12)]
    assert all(o.shape == (2, 12, 12, 1) for o in outs)
    assert len({o.tobytes() for o in outs}) > 6
    np.testing.assert_array_equal(augment3d.train_window(window, 12, np.random.default_rng(5)), outs[5])
    plain = augment3d.train_window(window, 12, np.random.default_rng(5), flip=False, rotate=False)
    assert set(np.unique(plain)) <= {np.float32(-0.15897), np.float32(0.5 - 0.15897)}


def test_batches_resume_from_the_iterator_state(data_dir):
    first = iter(_loader(data_dir))
    batches = [next(first) for _ in range(5)]
    state = first.get_state()
    after = next(first)
    resumed = iter(_loader(data_dir))
    resumed.set_state(state)
    again = next(resumed)
    np.testing.assert_array_equal(again["image"], after["image"])
    assert list(again["id"]) == list(after["id"]) and list(again["start"]) == list(after["start"])
    assert state == {"next_batch": 5} and len({b["image"].tobytes() for b in batches}) == 5


@pytest.mark.slow
def test_the_same_batches_whatever_the_worker_count(data_dir):
    def batches(workers):
        iterator = iter(_loader(data_dir, num_workers=workers))
        try:
            return [next(iterator) for _ in range(4)]
        finally:
            iterator.close()

    for one, two in zip(batches(0), batches(2), strict=True):
        np.testing.assert_array_equal(one["image"], two["image"])
        assert list(one["label"]) == list(two["label"]) and list(one["start"]) == list(two["start"])
