"""The grain input pipeline: prepared ArrayRecord datasets to batches of normalised NHWC images.

Every batch is a pure function of its index (record order from the seed and epoch, augmentation
randomness from the seed and the example's global position), so the batches do not depend on the
number of worker processes, and resuming only needs the number of batches already consumed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttlx.data import augment
from ttlx.data.labels import LabelPolicy, class_weights_from
from ttlx.data.loader_size import loader_threads, loader_workers
from ttlx.data.records import RecordReader
from ttlx.data.split_files import split_positions
from ttlx.data.store import Prepared, load_prepared, prepared_name
from ttlx.data.windows import is_volumetric, make_window_loader
from ttlx.data.worker_signals import ignore_stop_signals
from ttlx.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """What training needs to know about a prepared dataset."""

    name: str  # canonical registry name
    classes: tuple[str, ...]  # class names (for multi-label: the findings)
    multilabel: bool  # True for CheXpert-style multi-hot labels
    channels: int  # 1 or 3 as stored (the pipeline always yields 3-channel RGB)
    stored: dict | None = None  # how prepare stored each image (ttlx.data.stored_form.StoredForm.to_dict)
    volumetric: bool = False  # CT/MRI volumes: the loaders yield windows of slices (ttlx.data.windows)


def _prepared(dataset: str, data_dir: str | Path | None) -> Prepared:
    return load_prepared(prepared_name(dataset, data_dir), data_dir)


def dataset_info(dataset: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """Metadata of a prepared dataset; raises DataError when it is not prepared in ``data_dir``."""
    from ttlx.data.stored_form import StoredForm

    prepared = _prepared(dataset, data_dir)
    if is_volumetric(prepared):
        return DatasetInfo(prepared.name, prepared.classes, prepared.multilabel, 1, None, volumetric=True)
    return DatasetInfo(prepared.name, prepared.classes, prepared.multilabel, int(prepared.meta["channels"]),
                       StoredForm.of_prepared(prepared.meta).to_dict())


def class_weights(dataset: str, data_dir: str | Path | None = None, *, exp: int = 1, sub: int = 100) -> np.ndarray:
    """Float32 [C]: inverse frequency on the training split, or neg/pos per finding when multi-label."""
    prepared = _prepared(dataset, data_dir)
    positions = split_positions(prepared, exp=exp, split="train", sub=sub)
    policy = LabelPolicy.of(prepared)
    return class_weights_from(prepared.index["labels"][positions], len(prepared.classes), policy)


def split_ids(dataset: str, data_dir: str | Path | None = None, *, exp: int, split: str, sub: int = 100) -> list[str]:
    """The ids of one split of one repeat, in split-file order (train/val restricted to the --sub subset)."""
    prepared = _prepared(dataset, data_dir)
    positions = split_positions(prepared, exp=exp, split=split, sub=sub)
    return [str(i) for i in prepared.index["ids"][positions]]


class _TrainOrder:
    """Element j of one process: (global position, record) of an endless run of reshuffled epochs."""

    def __init__(self, records: np.ndarray, batch_size: int, shard_index: int, shard_count: int, seed: int):
        self.records, self.batch_size, self.seed = records, batch_size, seed
        self.shard_index, self.global_batch = shard_index, batch_size * shard_count
        self.epoch_length = len(records) // self.global_batch * self.global_batch  # full batches only
        self._cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return sys.maxsize // 4  # "forever"; grain only needs a length

    def __getitem__(self, j: int) -> tuple[int, int, float]:
        batch, row = divmod(int(j), self.batch_size)
        position = batch * self.global_batch + self.shard_index * self.batch_size + row
        epoch, k = divmod(position, self.epoch_length)
        return position, int(self.records[self._permutation(epoch)[k]]), 1.0

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cache = (epoch, rng.permutation(len(self.records)))
        return self._cache[1]

    def __getstate__(self):
        return {**self.__dict__, "_cache": None}


class _EvalOrder:
    """Element j of one process: the split in order, padded with masked copies to full batches."""

    def __init__(self, records: np.ndarray, batch_size: int, shard_index: int, shard_count: int, steps: int):
        self.records, self.batch_size = records, batch_size
        self.shard_index, self.global_batch, self.steps = shard_index, batch_size * shard_count, steps

    def __len__(self) -> int:
        return self.steps * self.batch_size

    def __getitem__(self, j: int) -> tuple[int, int, float]:
        batch, row = divmod(int(j), self.batch_size)
        position = batch * self.global_batch + self.shard_index * self.batch_size + row
        if position < len(self.records):
            return position, int(self.records[position]), 1.0
        return position, int(self.records[0]), 0.0


class _LoadExample:
    """Read one record, decode and augment its image, and turn its label into the training target."""

    def __init__(self, reader: RecordReader, image_size: int, train: bool, seed: int, policy: LabelPolicy):
        self.reader, self.train, self.seed, self.policy = reader, train, seed, policy
        self.transform = augment.train_transform(image_size) if train else augment.eval_transform(image_size)

    def __call__(self, item: tuple[int, int, float]) -> dict:
        position, record, mask = item
        data, label, example_id = self.reader.read(record)
        if self.train:
            image = self.transform(data, np.random.default_rng([self.seed, position]))
        else:
            image = self.transform(data)
        out = {"image": image, "id": example_id if mask else "", "mask": np.float32(mask)}
        out.update(self.policy.target(label))
        return out


def _normalize_batch(batch: dict) -> dict:
    return {**batch, "image": augment.normalize(batch["image"])}


class LoaderIterator:
    """Batches from a position on; ``get_state()`` is {'next_batch': n}, JSON-serialisable."""

    def __init__(self, loader: Loader, next_batch: int = 0):
        self._loader = loader
        self._start(next_batch)

    def _start(self, next_batch: int) -> None:
        self._next = next_batch
        self._it = iter(self._loader._iter_dataset(next_batch))

    def __iter__(self) -> LoaderIterator:
        return self

    def __next__(self) -> dict:
        batch = next(self._it)
        self._next += 1
        return batch

    def get_state(self) -> dict:
        return {"next_batch": self._next}

    def set_state(self, state: dict) -> None:
        self.close()
        self._start(int(state["next_batch"]))

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


class Loader:
    """An iterable of batches; ``iter(loader)`` gives an iterator with get_state()/set_state(), or, for a
    one-pass loader with ``persistent_workers``, one pass of ``steps_per_epoch`` batches."""

    def __init__(self, dataset, order, *, num_examples: int, steps_per_epoch: int, num_workers: int,
                 num_threads: int | None = None, persistent_workers: bool = False):
        self._dataset, self._order = dataset, order
        self.num_examples, self.steps_per_epoch, self.num_workers = num_examples, steps_per_epoch, num_workers
        self.num_threads = loader_threads(num_threads)
        self.persistent_workers = persistent_workers and num_workers > 0
        self._passes: LoaderIterator | None = None  # the persistent workers' endless stream of passes
        self._left = 0  # batches of the current pass not yet taken from it

    def _iter_dataset(self, start_batch: int):
        import grain

        dataset = self._dataset[start_batch:] if start_batch else self._dataset
        threads = self.num_threads
        iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
        if self.num_workers > 0:
            iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers),
                                                    worker_init_fn=ignore_stop_signals)  # the run stops them
        return iter_dataset

    def __iter__(self):
        if self.persistent_workers:
            return self._one_pass()
        return LoaderIterator(self)

    def _one_pass(self):
        """The next pass, from worker processes that started with the first one. grain starts worker
        processes anew for every iterator, about half a second each (RESULTS section 7.5), so the passes
        share one iterator over the batches repeated; the rest of an unfinished pass is skipped."""
        if self._passes is None:
            self._passes = LoaderIterator(Loader(self._dataset.repeat(), self._order, num_examples=self.num_examples,
                                                 steps_per_epoch=self.steps_per_epoch,
                                                 num_workers=self.num_workers, num_threads=self.num_threads))
        for _ in range(self._left):
            next(self._passes)
        self._left = self.steps_per_epoch
        return self._pass()

    def _pass(self):
        while self._left > 0:
            batch = next(self._passes)
            self._left -= 1
            yield batch

    def close(self) -> None:
        """Stop the persistent worker processes, if any (they also stop when the loader is freed)."""
        if self._passes is not None:
            self._passes.close()
            self._passes, self._left = None, 0

    def __len__(self) -> int:
        return self.steps_per_epoch


def make_loader(
    dataset: str,
    data_dir: str | Path | None = None,
    *,
    exp: int,
    split: str,
    sub: int = 100,
    batch_size: int,
    image_size: int = 224,
    train: bool,
    seed: int = 0,
    num_workers: int | None = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    normalize: bool = True,
    num_threads: int | None = None,
    persistent_workers: bool = False,
    window: int | None = None,
) -> Loader:
    """Batches of {'image','label','id','mask'[, 'label_mask']} for one split of one repeat.

    Train: shuffled per epoch from ``seed``, RandomResizedCrop(0.08-1) + flip, repeats forever, full
    batches. Eval: one pass in split order, resize to S*256/224 + centre crop, last batch padded (mask 0).
    ``batch_size`` is per process: with ``shard_count`` processes a global batch holds
    ``batch_size * shard_count`` examples and process ``shard_index`` gets its slice of each one.
    ``normalize=False`` leaves the images uint8 (``augment.normalize`` of them is the default batch, bit for
    bit): a quarter of the bytes between worker processes and to a device that normalises them itself.
    ``num_workers``: grain worker processes, ``None`` to let :func:`loader_workers` choose for the backend.
    ``num_threads``: grain read threads per loading process (default: :func:`loader_threads`).
    ``persistent_workers`` (evaluation loaders read every epoch, e.g. ``ttlx train``'s validation split):
    the worker processes start with the first pass and serve every later one, instead of starting anew for
    each; call ``close()`` when done with the loader.
    A volume dataset gives batches of windows of ``window`` slices instead (:mod:`ttlx.data.windows`).
    """
    import grain

    if not 0 <= shard_index < shard_count:
        raise DataError(f"shard_index must be in 0..{shard_count - 1}, got {shard_index}.")
    prepared = _prepared(dataset, data_dir)
    records = split_positions(prepared, exp=exp, split=split, sub=sub)
    if is_volumetric(prepared):  # windows of slices
        return make_window_loader(prepared, records, split, batch_size, image_size, window, train, seed, num_workers,
                                  shard_index, shard_count, num_threads, persistent_workers)
    global_batch = batch_size * shard_count
    if train:
        steps = len(records) // global_batch
        if steps == 0:
            raise DataError(
                f"The {split} split of '{prepared.name}' (exp {exp}, sub {sub}%) has {len(records)} images, "
                f"fewer than one batch of {global_batch}; lower --bs."
            )
        order = _TrainOrder(records, batch_size, shard_index, shard_count, seed)
    else:
        steps = math.ceil(len(records) / global_batch)
        order = _EvalOrder(records, batch_size, shard_index, shard_count, steps)
    num_workers = loader_workers(num_workers, one_pass_batches=None if train else steps)
    if num_workers > 0:
        _allow_grain_workers()
    load = _LoadExample(RecordReader(prepared.records_dir), image_size, train, seed, LabelPolicy.of(prepared))
    pipeline = grain.MapDataset.source(order).map(load).batch(batch_size, drop_remainder=True)
    if normalize:
        pipeline = pipeline.map(_normalize_batch)
    return Loader(pipeline, order, num_examples=len(records), steps_per_epoch=steps, num_workers=num_workers,
                  num_threads=num_threads, persistent_workers=persistent_workers and not train)


def _allow_grain_workers() -> None:
    """grain's worker processes read absl flags; outside an absl app (Typer) they must count as parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
