"""Batches placed on the devices by a background thread (TTLX_DEVICE_PREFETCH): the same batches in the same
order, no read beyond the epoch, the loader's errors raised in the loop, and the same run as without."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fake_data import FakeData
from tiny_model import tiny_train_config

from ttlx.errors import ConfigError, DataError
from ttlx.runs.checkpoint import load_model_state
from ttlx.runs.run_dir import RunDir
from ttlx.training import prefetch
from ttlx.training.loop import TIMING_COLUMNS, train


class Counting:
    """An iterator over 0, 1, 2, ... that counts its reads and fails at ``fail_at``."""

    def __init__(self, fail_at: int | None = None):
        self.read, self.fail_at = 0, fail_at

    def __iter__(self):
        return self

    def __next__(self):
        if self.read == self.fail_at:
            raise DataError(f"Image {self.read} is corrupt; re-run `ttlx prepare`.")
        self.read += 1
        return self.read - 1


def test_prefetched_batches_are_the_inline_ones_placed_by_another_thread_and_no_more():
    threads = []

    def place(batch):
        threads.append(threading.get_ident())
        return {"image": batch}

    iterator = Counting()
    batches = prefetch.epoch_batches(iterator, place, steps=5, ahead=2)
    assert isinstance(batches, prefetch.PrefetchedBatches)
    got = [next(batches) for _ in range(5)]
    batches.close()
    inline = prefetch.epoch_batches(Counting(), lambda b: {"image": b}, steps=5, ahead=0)
    assert got == [next(inline) for _ in range(5)] == [{"image": i} for i in range(5)]
    assert iterator.read == 5  # the epoch's batches and not one more: the iterator's state is the loop's
    assert set(threads) != {threading.get_ident()} and len(set(threads)) == 1
    assert batches.waited >= 0 and inline.waited >= 0


def test_a_loader_error_is_raised_by_the_next_that_would_return_its_batch():
    batches = prefetch.epoch_batches(Counting(fail_at=3), lambda b: b, steps=6, ahead=2)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(DataError, match=r"^Image 3 is corrupt; re-run `ttlx prepare`\.$"):
        next(batches)
    batches.close()


def test_closing_mid_epoch_stops_the_thread_within_the_batches_ahead():
    iterator = Counting()
    batches = prefetch.epoch_batches(iterator, lambda b: b, steps=100, ahead=2)
    assert next(batches) == 0
    batches.close()
    assert not batches._thread.is_alive() and iterator.read <= 1 + 2 + 1


def test_the_setting_is_a_number_of_batches(monkeypatch):
    monkeypatch.delenv("TTLX_DEVICE_PREFETCH", raising=False)
    assert prefetch.batches_ahead() == 0
    monkeypatch.setenv("TTLX_DEVICE_PREFETCH", "2")
    assert prefetch.batches_ahead() == 2
    for bad in ("-1", "two"):
        monkeypatch.setenv("TTLX_DEVICE_PREFETCH", bad)
        with pytest.raises(ConfigError, match=rf"^TTLX_DEVICE_PREFETCH='{bad}' is not a whole number of at least 0; "
                                              r"set one or unset it\.$"):
            prefetch.batches_ahead()


@pytest.mark.slow
def test_a_run_with_batches_prefetched_is_the_run_without(finished_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TTLX_DEVICE_PREFETCH", "2")
    prefetched = train(tiny_train_config(tmp_path / "prefetched"), progress=False, data=FakeData())

    def rows(run_dir):
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in RunDir(run_dir).read_metrics()]

    assert rows(prefetched) == rows(finished_run) and len(rows(prefetched)) == 3
    for which in ("best", "latest"):
        ours, theirs = load_model_state(prefetched, which), load_model_state(finished_run, which)
        assert ours[0] == theirs[0] and ours[1].keys() == theirs[1].keys()
        assert all(np.array_equal(ours[1][k], theirs[1][k]) for k in ours[1])
