"""Windows of stored volumes as batches: what ``make_loader`` returns for a volume dataset.

A window is ``window`` consecutive slices of one study (24 by default, as PENet). An epoch visits every
window of the split once, as the PENet reference does: a study of D slices has ceil(D / window) of them,
consecutive and non-overlapping. Training draws, for the element at global position p, from a generator
seeded by (seed, p): with probability 0.3 a window centred on the PE (positive) slices of a positive study
(the study itself when positive, else one of the split's positive studies), then a start jitter of up to
``window / 2`` slices either way, kept inside the study, then the augmentation of :mod:`ttlx.data.augment3d`.
A window's label is positive when at least 4 of its slices are positive slices (the reference's
``min_abnormal_slices``); studies whose slice labels are unknown give every window the study's label.
Evaluation reads the consecutive windows in order, the last one padded with air. As the 2D pipeline
(:mod:`ttlx.data.pipeline`), every batch is a function of its index only, so the batches do not depend on the
worker count and a resumed run needs only the number of batches already consumed.

Batches: ``image`` float32 (batch, window, size, size, 1) already normalised, ``label``, ``id`` (the study),
``start`` (the window's first slice) and ``mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ttlx.data import augment3d
from ttlx.data.volumes import VolumeStore

DEFAULT_WINDOW = 24
POSITIVE_WINDOW_P = 0.3  # the reference's train.sh: --abnormal_prob=0.3
MIN_POSITIVE_SLICES = 4  # the reference's --min_abnormal_slices


@dataclass(frozen=True)
class WindowTable:
    """The windows of one split: record position and first slice of each, in split order."""

    records: np.ndarray  # int64 record position per window
    starts: np.ndarray  # int64 first slice per window

    @classmethod
    def of(cls, store: VolumeStore, records: np.ndarray, window: int) -> WindowTable:
        counts = [max(1, math.ceil(store.shape(int(r))[0] / window)) for r in records]
        return cls(np.repeat(np.asarray(records, np.int64), counts),
                   np.concatenate([np.arange(n, dtype=np.int64) * window for n in counts]) if counts
                   else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.records)


def window_label(store: VolumeStore, record: int, study_label: int, start: int, window: int) -> int:
    """1 when at least 4 slices of the window are positive slices (fewer when the window is shorter); the
    study's label where its slice labels are unknown."""
    labels = store.slice_labels(record)
    if labels is None or study_label != 1:
        return int(study_label)
    inside = int(labels[max(start, 0):max(start + window, 0)].sum())
    return int(inside >= min(MIN_POSITIVE_SLICES, window))


class LoadWindow:
    """Element (position, window index, mask) -> one example dict; training draws its randomness from (seed,
    position)."""

    def __init__(self, store: VolumeStore, table: WindowTable, labels: np.ndarray, ids: np.ndarray, policy, *,
                 window: int, image_size: int, train: bool, seed: int, positive_p: float = POSITIVE_WINDOW_P):
        self.store, self.table, self.labels, self.ids, self.policy = store, table, labels, ids, policy
        self.window, self.image_size, self.train, self.seed = window, image_size, train, seed
        self.positive_p = positive_p
        binary = labels.ndim == 1 and labels.max(initial=0) <= 1
        self.positives = np.asarray(sorted({int(r) for r in table.records if binary and labels[r] == 1
                                            and store.slice_labels(int(r)) is not None
                                            and store.slice_labels(int(r)).any()}), np.int64)

    def choose(self, position: int, index: int) -> tuple[int, int, np.random.Generator | None]:
        """(record, first slice, generator for the augmentation) of one element."""
        record, start = int(self.table.records[index]), int(self.table.starts[index])
        if not self.train:
            return record, start, None
        rng = np.random.default_rng([self.seed, position])
        if len(self.positives) and rng.random() < self.positive_p:
            if record not in self.positives:
                record = int(self.positives[rng.integers(len(self.positives))])
            pe = np.flatnonzero(self.store.slice_labels(record))
            start = max(0, (int(pe[0]) + int(pe[-1])) // 2 - self.window // 2)
        half = self.window // 2
        start += int(rng.integers(-half, half + 1))
        depth = self.store.shape(record)[0]
        start = min(max(start, 0), max(depth - self.window, 0))
        return record, start, rng

    def __call__(self, item: tuple[int, int, float]) -> dict:
        position, index, mask = item
        record, start, rng = self.choose(position, index)
        voxels = self.store.window(record, start, self.window)
        if rng is None:
            image = augment3d.eval_window(voxels, self.image_size, self.store.intensity_window)
        else:
            image = augment3d.train_window(voxels, self.image_size, rng, hu_window=self.store.intensity_window)
        study_label = self.labels[record]
        label = window_label(self.store, record, int(study_label), start, self.window)
        out = {"image": image, "id": str(self.ids[record]) if mask else "", "start": np.int32(start),
               "mask": np.float32(mask)}
        out.update(self.policy.target(label))
        return out


def make_window_loader(prepared, records: np.ndarray, split: str, batch_size: int, image_size: int,
                       window: int | None, train: bool, seed: int, num_workers: int | None, shard_index: int,
                       shard_count: int, num_threads: int | None, persistent_workers: bool, /):
    """The :class:`ttlx.data.pipeline.Loader` of windows of one split (``records``: its record positions)."""
    import grain

    from ttlx.data.labels import LabelPolicy
    from ttlx.data.loader_size import loader_workers
    from ttlx.data.pipeline import Loader, _allow_grain_workers, _EvalOrder, _TrainOrder
    from ttlx.errors import DataError

    window = window or DEFAULT_WINDOW
    store = VolumeStore(prepared.records_dir)
    table = WindowTable.of(store, records, window)
    global_batch = batch_size * shard_count
    indices = np.arange(len(table), dtype=np.int64)
    if train:
        steps = len(table) // global_batch
        if steps == 0:
            raise DataError(f"The {split} split of '{prepared.name}' has {len(table)} windows of {window} slices, "
                            f"fewer than one batch of {global_batch}; lower --bs or --window.")
        order = _TrainOrder(indices, batch_size, shard_index, shard_count, seed)
    else:
        steps = math.ceil(len(table) / global_batch)
        order = _EvalOrder(indices, batch_size, shard_index, shard_count, steps)
    num_workers = loader_workers(num_workers, one_pass_batches=None if train else steps)
    if num_workers > 0:
        _allow_grain_workers()
    load = LoadWindow(store, table, prepared.index["labels"], prepared.index["ids"], LabelPolicy.of(prepared),
                      window=window, image_size=image_size, train=train, seed=seed)
    pipeline = grain.MapDataset.source(order).map(load).batch(batch_size, drop_remainder=True)
    loader = Loader(pipeline, order, num_examples=len(table), steps_per_epoch=steps, num_workers=num_workers,
                    num_threads=num_threads, persistent_workers=persistent_workers and not train)
    loader.windows = table
    return loader


def is_volumetric(prepared) -> bool:
    """Whether a prepared dataset holds volumes (its records folder is a volume store)."""
    from ttlx.data.volumes import STUDIES

    return (prepared.records_dir / STUDIES).is_file()


def split_windows(prepared, records: np.ndarray, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(study id, first slice) of every evaluation window of a split, in the evaluation loader's order."""
    table = WindowTable.of(VolumeStore(prepared.records_dir), records, window or DEFAULT_WINDOW)
    return prepared.index["ids"][table.records].astype(str), table.starts


def split_study_windows(dataset: str, data_dir, *, exp: int, split: str, sub: int = 100, window: int | None = None):
    """(study id per evaluation window, first slice per window, {study id: study label}) of one split."""
    from ttlx.data.pipeline import _prepared
    from ttlx.data.split_files import split_positions

    prepared = _prepared(dataset, data_dir)
    records = split_positions(prepared, exp=exp, split=split, sub=sub)
    ids, starts = split_windows(prepared, records, window)
    labels = prepared.index["labels"]
    return ids, starts, {str(prepared.index["ids"][r]): labels[r] for r in records}
