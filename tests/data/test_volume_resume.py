"""A run on volumes that stops in its second epoch resumes from its checkpointed window iterator and ends as
an uninterrupted run does."""

import numpy as np
import pytest

from ttlx.config import TrainConfig
from ttlx.data import pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.runs.checkpoint import load_model_state
from ttlx.runs.run_dir import RunDir
from ttlx.training.loop import TIMING_COLUMNS, train


class _CrashingIterator:
    def __init__(self, inner, after: int):
        self.inner, self.left = inner, after

    def __iter__(self):
        return self

    def __next__(self):
        if self.left == 0:
            raise RuntimeError("the machine went away")
        self.left -= 1
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)

    def close(self):
        self.inner.close()


class _CrashingData:
    """ttlx's data layer, whose training iterator fails after ``after`` batches."""

    dataset_info = staticmethod(pipeline.dataset_info)
    class_weights = staticmethod(pipeline.class_weights)
    split_ids = staticmethod(pipeline.split_ids)

    def __init__(self, after: int):
        self.after = after

    def make_loader(self, *args, **kwargs):
        loader = pipeline.make_loader(*args, **kwargs)
        if kwargs["train"]:
            make_iterator = loader.__iter__
            loader.__class__ = type("Crashing", (type(loader),), {
                "__iter__": lambda own: _CrashingIterator(make_iterator(), self.after)})
        return loader


def _rows(run_dir):
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in RunDir(run_dir).read_metrics()]


@pytest.mark.slow
def test_a_stopped_run_on_windows_resumes_where_it_stopped(tinynet3d, tmp_path):
    data_dir = tmp_path / "data"
    prepare_dataset("synthetic3d", data_dir, count=20, slices=16, size=32)
    options = dict(dataset="synthetic3d", model="tinynet3d", pretrained="random", head="pool", image_size=32,
                   window=8, batch_size=4, lr=1e-2, max_epoch=2, num_workers=0, data_dir=str(data_dir))
    whole = train(TrainConfig(**options, workdir=str(tmp_path / "whole")), progress=False)
    steps = pipeline.make_loader("synthetic3d", data_dir, exp=1, split="train", batch_size=4, image_size=32,
                                 train=True, window=8).steps_per_epoch
    cfg = TrainConfig(**options, workdir=str(tmp_path / "stopped"))
    with pytest.raises(RuntimeError, match="went away"):
        train(cfg, progress=False, data=_CrashingData(after=steps + 2))  # in epoch 2
    assert [r["epoch"] for r in RunDir(tmp_path / "stopped").read_metrics()] == [1]
    resumed = train(cfg, progress=False)
    assert _rows(resumed) == _rows(whole)
    latest, expected = load_model_state(resumed, "latest")[1], load_model_state(whole, "latest")[1]
    for key, value in expected.items():
        np.testing.assert_array_equal(latest[key], value, err_msg=key)
