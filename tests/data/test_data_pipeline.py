"""The grain pipeline on the digits default: batches, epochs, determinism, resume, padding, shards."""

import csv
import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image

from ttlx import settings
from ttlx.data import loader_size, pipeline
from ttlx.data.augment import normalize
from ttlx.data.prepare import prepare_dataset
from ttlx.errors import ConfigError, DataError

S = 32  # small images keep the tests fast


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    prepare_dataset("digits", data_dir)
    return data_dir


def _loader(data_dir, **kw):
    options = dict(exp=1, split="train", batch_size=64, image_size=S, train=True) | kw
    return pipeline.make_loader("digits", data_dir, **options)


def _take(loader, n, state=None):
    it = iter(loader)
    if state is not None:
        it.set_state(state)
    batches = list(itertools.islice(it, n))
    return batches, it.get_state()


def test_dataset_info_of_digits(data_dir):
    info = pipeline.dataset_info("Digits", data_dir)
    stored = {"channels": 1, "encoding": "png", "max_size": 0, "pad_square": False}  # 8x8 PNGs, as prepared
    assert info == pipeline.DatasetInfo("digits", tuple("0123456789"), False, 1, stored)


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(DataError) as err:
        pipeline.dataset_info("digits", tmp_path)
    how = f"run `ttlx prepare digits --data-dir {tmp_path}` first."
    assert str(err.value) == f"Dataset 'digits' is not prepared in {tmp_path}; {how}"


def test_split_ids_follow_the_split_files_and_nest_subsets(data_dir):
    with open(data_dir / "digits" / "splits" / "exp2" / "val.csv", newline="") as f:
        assert pipeline.split_ids("digits", data_dir, exp=2, split="val") == [r["id"] for r in csv.DictReader(f)]
    train = {p: set(pipeline.split_ids("digits", data_dir, exp=1, split="train", sub=p)) for p in (10, 50, 100)}
    assert train[10] < train[50] < train[100]
    assert len(train[10]) == pytest.approx(0.1 * len(train[100]), abs=10)
    test = pipeline.split_ids("digits", data_dir, exp=1, split="test")
    # --sub leaves the test split alone.
    assert pipeline.split_ids("digits", data_dir, exp=1, split="test", sub=10) == test


def test_class_weights_are_inverse_frequency_on_the_training_split(data_dir):
    with open(data_dir / "digits" / "splits" / "exp1" / "train.csv", newline="") as f:
        counts = np.bincount([int(r["label"]) for r in csv.DictReader(f)], minlength=10)
    weights = pipeline.class_weights("digits", data_dir, exp=1)
    assert weights.dtype == np.float32 and weights.shape == (10,)
    np.testing.assert_allclose(weights, counts.max() / counts, rtol=1e-6)


def test_train_batches_have_the_agreed_shapes_and_cover_an_epoch_once(data_dir):
    loader = _loader(data_dir)
    train_ids = set(pipeline.split_ids("digits", data_dir, exp=1, split="train"))
    assert loader.num_examples == len(train_ids) and loader.steps_per_epoch == len(train_ids) // 64
    batches, _ = _take(loader, 2 * loader.steps_per_epoch)
    first = batches[0]
    assert first["image"].shape == (64, S, S, 3) and first["image"].dtype == np.float32
    assert first["label"].shape == (64,) and first["label"].dtype == np.int32
    assert first["mask"].tolist() == [1.0] * 64 and "label_mask" not in first
    epoch1 = np.concatenate([b["id"] for b in batches[: loader.steps_per_epoch]])
    epoch2 = np.concatenate([b["id"] for b in batches[loader.steps_per_epoch :]])
    assert len(set(epoch1)) == len(epoch1) and set(epoch1) <= train_ids
    assert not np.array_equal(epoch1, epoch2)  # reshuffled every epoch
    labels = {i: str(lbl) for b in batches for i, lbl in zip(b["id"], b["label"], strict=True)}
    with open(data_dir / "digits" / "splits" / "exp1" / "train.csv", newline="") as f:
        assert all(labels[r["id"]] == r["label"] for r in csv.DictReader(f) if r["id"] in labels)


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
    a, _ = _take(_loader(data_dir, seed=3), 2)
    b, _ = _take(_loader(data_dir, seed=3), 2)
    c, _ = _take(_loader(data_dir, seed=4), 1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["id"], y["id"])
    assert not np.array_equal(a[0]["id"], c[0]["id"])


def test_a_restored_iterator_continues_with_the_same_batches(data_dir):
    loader = _loader(data_dir)
    straight, _ = _take(loader, 5)
    _, state = _take(loader, 3)
    state = json.loads(json.dumps(state))  # checkpoints store it as JSON
    resumed, after = _take(loader, 2, state=state)
    for x, y in zip(straight[3:], resumed, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert after == {"next_batch": 5}


def test_worker_processes_give_the_same_batches(data_dir):
    threads, _ = _take(_loader(data_dir), 3)
    loader = _loader(data_dir, num_workers=2)
    it = iter(loader)
    workers = list(itertools.islice(it, 3))
    for x, y in zip(threads, workers, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    del workers
    it.close()


def test_unnormalised_batches_are_uint8_and_normalise_to_the_default_ones(data_dir):
    """normalize=False (for a device that normalises): the same crops as uint8, a quarter of the bytes."""
    default, _ = _take(_loader(data_dir, seed=5), 2)
    raw, _ = _take(_loader(data_dir, seed=5, normalize=False), 2)
    for x, y in zip(default, raw, strict=True):
        assert y["image"].dtype == np.uint8 and y["image"].shape == x["image"].shape
        np.testing.assert_array_equal(normalize(y["image"]), x["image"])
        np.testing.assert_array_equal(y["label"], x["label"])
    it = iter(_loader(data_dir, seed=5, normalize=False, num_workers=2))  # as ttlx train --num-workers 2
    from_workers = list(itertools.islice(it, 2))
    for x, y in zip(raw, from_workers, strict=True):
        assert y["image"].dtype == np.uint8
        np.testing.assert_array_equal(x["image"], y["image"])
    del from_workers
    it.close()


def test_loader_threads_come_from_the_argument_then_the_environment_then_the_cpus(data_dir, monkeypatch):
    monkeypatch.delenv("TTLX_LOADER_THREADS", raising=False)
    assert loader_size.loader_threads() == min(4, settings.schedulable_cpus())
    monkeypatch.setenv("TTLX_LOADER_THREADS", " 8 ")
    assert loader_size.loader_threads() == 8 and loader_size.loader_threads(3) == 3
    one, _ = _take(_loader(data_dir, seed=2, num_threads=1), 2)  # batches never depend on the thread count
    assert _loader(data_dir, num_threads=1).num_threads == 1 and _loader(data_dir).num_threads == 8
    eight, _ = _take(_loader(data_dir, seed=2), 2)
    for x, y in zip(one, eight, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    monkeypatch.setenv("TTLX_LOADER_THREADS", "many")
    with pytest.raises(ConfigError, match="TTLX_LOADER_THREADS='many' is not a whole number of at least 1"):
        _loader(data_dir)
    with pytest.raises(ConfigError, match="at least 1 thread, got 0"):
        loader_size.loader_threads(0)


def test_loader_workers_are_none_on_cpu_and_half_the_cores_per_accelerator(data_dir, monkeypatch):
    import jax

    assert loader_size.loader_workers() == 0 and _loader(data_dir, num_workers=None).num_workers == 0  # CPU here
    assert loader_size.loader_workers(3) == 3 and loader_size.loader_workers(0) == 0
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    for cpus, devices, expected in ((16, 1, 8), (32, 1, 8), (96, 8, 48), (6, 1, 3), (1, 1, 1)):
        monkeypatch.setattr(settings, "schedulable_cpus", lambda cpus=cpus: cpus)
        monkeypatch.setattr(jax, "local_device_count", lambda devices=devices: devices)
        assert loader_size.loader_workers() == expected, (cpus, devices)
    assert loader_size.loader_workers(0) == 0  # an explicit count is kept on accelerators too
    # a one-pass loader restarts its workers every pass: one per 4 batches at most, none under 4 batches
    monkeypatch.setattr(settings, "schedulable_cpus", lambda: 16)
    monkeypatch.setattr(jax, "local_device_count", lambda: 1)
    assert [loader_size.loader_workers(one_pass_batches=n) for n in (3, 4, 13, 100)] == [0, 1, 3, 8]
    assert loader_size.loader_workers(2, one_pass_batches=3) == 2  # an explicit count is kept
    evaluation = dict(split="test", train=False, num_workers=None)  # 359 images
    assert [_loader(data_dir, batch_size=b, **evaluation).num_workers for b in (128, 64, 16)] == [0, 1, 5]
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match=r"worker count must be a whole number, 0 or more, got"):
            loader_size.loader_workers(bad)


def test_eval_is_one_ordered_pass_padded_with_masked_examples(data_dir):
    loader = _loader(data_dir, split="test", train=False)
    ids = pipeline.split_ids("digits", data_dir, exp=1, split="test")
    assert loader.steps_per_epoch == math.ceil(len(ids) / 64)
    batches, _ = _take(loader, loader.steps_per_epoch)
    mask = np.concatenate([b["mask"] for b in batches])
    got = np.concatenate([b["id"] for b in batches])
    assert mask.sum() == len(ids) and mask[: len(ids)].all() and not mask[len(ids) :].any()
    assert got[: len(ids)].tolist() == ids
    assert all(b["image"].shape == (64, S, S, 3) for b in batches)
    again = list(loader)  # every iter() is a new pass that ends by itself
    assert len(again) == loader.steps_per_epoch
    np.testing.assert_array_equal(again[-1]["id"], batches[-1]["id"])


def test_persistent_workers_start_once_and_serve_every_pass_the_same_batches(data_dir, monkeypatch):
    evaluation = dict(split="val", train=False, normalize=False)
    expected = list(_loader(data_dir, **evaluation))  # one pass with grain threads
    loader = _loader(data_dir, num_workers=2, persistent_workers=True, **evaluation)
    started = []
    iter_dataset = pipeline.Loader._iter_dataset
    monkeypatch.setattr(pipeline.Loader, "_iter_dataset",
                        lambda self, start: started.append(start) or iter_dataset(self, start))
    first = list(loader)
    abandoned = next(iter(loader))  # a pass left after one batch: the next pass still starts at the start
    passes = [first, [abandoned], list(loader), list(loader)]
    assert started == [0]  # one iterator, so the worker processes started once (RESULTS section 7.5)
    for got in passes:
        for ours, theirs in zip(got, expected, strict=False):
            np.testing.assert_array_equal(ours["image"], theirs["image"])
            np.testing.assert_array_equal(ours["id"], theirs["id"])
    assert [len(p) for p in passes] == [len(expected), 1, len(expected), len(expected)]
    loader.close()
    assert not _loader(data_dir, num_workers=0, persistent_workers=True, **evaluation).persistent_workers
    assert not _loader(data_dir, num_workers=2, persistent_workers=True).persistent_workers  # train repeats anyway


def test_eval_image_is_the_resized_centre_crop_of_the_source_digit(data_dir):
    from sklearn.datasets import load_digits

    batch = next(iter(_loader(data_dir, split="test", train=False)))
    index = int(str(batch["id"][0]).removeprefix("digit_"))
    digit = np.clip(load_digits().images[index] * 16, 0, 255).astype(np.uint8)
    resized = np.asarray(Image.fromarray(digit).resize((37, 37), Image.BILINEAR))  # 32 * 256/224 = 36.6
    crop = resized[2:34, 2:34]
    expected = normalize(np.repeat(crop[None, :, :, None], 3, axis=3))[0]
    np.testing.assert_allclose(batch["image"][0], expected, atol=1e-5)


def test_shards_are_slices_of_the_global_batch(data_dir):
    whole, _ = _take(_loader(data_dir, batch_size=32), 2)
    parts = [_take(_loader(data_dir, batch_size=16, shard_index=k, shard_count=2), 2)[0] for k in (0, 1)]
    for step in range(2):
        joined = np.concatenate([parts[0][step]["id"], parts[1][step]["id"]])
        np.testing.assert_array_equal(joined, whole[step]["id"])
    assert (
        _loader(data_dir, batch_size=16, shard_count=2).steps_per_epoch
        == _loader(data_dir, batch_size=32).steps_per_epoch
    )


def test_a_split_smaller_than_one_batch_is_a_data_error(data_dir):
    with pytest.raises(DataError, match=r"has \d+ images, fewer than one batch of 4096; lower --bs"):
        _loader(data_dir, batch_size=4096)


def test_bad_exp_and_split_names_are_data_errors(data_dir):
    with pytest.raises(DataError, match="--exp must be one of 1, 2, 3, got 4"):
        _loader(data_dir, exp=4)
    with pytest.raises(DataError, match="The split must be one of train, val, test, got 'valid'"):
        _loader(data_dir, split="valid")


def test_a_reader_shared_by_threads_opens_its_records_once(monkeypatch, tmp_path):
    """grain's prefetch threads share one reader per process: opening it (and importing tensorflow_datasets)
    in several threads at once deadlocked a worker on Python 3.11, so the first open is serialized."""
    import threading
    import time

    from ttlx.data.records import RecordReader

    opened = []

    def slow_open(self):
        opened.append(threading.get_ident())
        time.sleep(0.05)  # long enough for every thread to arrive while the first one opens
        return [{"image": b"jpeg", "label": 3, "id": b"case-7"}]

    monkeypatch.setattr(RecordReader, "_open", slow_open)
    reader = RecordReader(tmp_path)
    start = threading.Barrier(8)
    results = []

    def first_read():
        start.wait()
        results.append(reader.read(0))

    threads = [threading.Thread(target=first_read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(opened) == 1 and results == [(b"jpeg", 3, "case-7")] * 8 and len(reader) == 1
