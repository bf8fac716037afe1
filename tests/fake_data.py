"""An in-memory stand-in for ``ttlx.data.pipeline``: learnable coloured-noise images, same loader contract.

Class c images have a class-specific mean colour plus noise, so a tiny network separates them in a few
epochs. Train loaders shuffle per epoch from the seed, flip at random, repeat forever and checkpoint their
position; eval loaders make one pass and pad the last batch with ``mask`` 0.
"""

from __future__ import annotations

import numpy as np

from ttlx.data.pipeline import DatasetInfo

SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


class FakeIterator:
    def __init__(self, loader: FakeLoader):
        self.loader = loader
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        loader = self.loader
        if loader.train:
            batch = loader.train_batch(self.position)
        else:
            if self.position >= loader.steps_per_epoch:
                raise StopIteration
            batch = loader.eval_batch(self.position)
        self.position += 1
        return batch

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])

    def close(self) -> None:  # as ttlx's LoaderIterator, which stops its worker processes here
        self.closed = True


class FakeLoader:
    def __init__(self, images, labels, *, batch_size: int, train: bool, seed: int, multilabel: bool):
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.seed, self.multilabel = batch_size, train, seed, multilabel
        self.num_examples = len(images)
        n = len(images)
        self.steps_per_epoch = n // batch_size if train else -(-n // batch_size)

    def close(self) -> None:  # as ttlx's Loader, which stops its persistent worker processes here
        self.closed = True

    def __iter__(self) -> FakeIterator:
        return FakeIterator(self)

    def _batch(self, index: np.ndarray, mask: np.ndarray) -> dict:
        batch = {"image": self.images[index], "label": self.labels[index], "mask": mask,
                 "id": np.asarray([f"img{i}" for i in index])}
        if self.multilabel:
            batch["label_mask"] = np.ones_like(self.labels[index])
        return batch

    def train_batch(self, position: int) -> dict:
        epoch, step = divmod(position, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        index = order[step * self.batch_size:(step + 1) * self.batch_size]
        batch = self._batch(index, np.ones(self.batch_size, np.float32))
        flip = np.random.default_rng([self.seed, epoch, step, 7]).random(self.batch_size) < 0.5
        batch["image"] = np.where(flip[:, None, None, None], batch["image"][:, :, ::-1], batch["image"])
        return batch

    def eval_batch(self, position: int) -> dict:
        index = np.arange(position * self.batch_size, (position + 1) * self.batch_size)
        mask = (index < self.num_examples).astype(np.float32)
        return self._batch(np.minimum(index, self.num_examples - 1), mask)


class FakeData:
    """Implements ``dataset_info``, ``class_weights`` and ``make_loader`` like the real pipeline."""

    def __init__(self, num_classes: int = 3, sizes=None, multilabel: bool = False, name: str = "fake",
                 noise: float = 0.8):
        self.classes = tuple(f"class{c}" for c in range(num_classes))
        self.sizes = sizes or {"train": 48, "val": 24, "test": 30}
        self.multilabel, self.name, self.noise = multilabel, name, noise

    def dataset_info(self, dataset: str, data_dir=None) -> DatasetInfo:
        # stored as ttlx prepare stores a lossless RGB set at its own size (ttlx.data.stored_form)
        return DatasetInfo(self.name, self.classes, self.multilabel, 3,
                           {"channels": 3, "encoding": "png", "max_size": 0, "pad_square": False})

    def split(self, split: str, image_size: int):
        rng = np.random.default_rng(SPLIT_SEEDS[split])
        n, c = self.sizes[split], len(self.classes)
        colours = np.random.default_rng(0).normal(size=(c, 3)).astype(np.float32)
        if self.multilabel:
            labels = (rng.random((n, c)) < 0.4).astype(np.float32)
            mean = labels @ colours
        else:
            labels = np.arange(n, dtype=np.int32) % c  # every class present, skewed by n % c
            mean = colours[labels]
        noise = self.noise * rng.normal(size=(n, image_size, image_size, 3)).astype(np.float32)
        return (mean[:, None, None, :] + noise).astype(np.float32), labels

    def class_weights(self, dataset: str, data_dir=None, *, exp: int = 1, sub: int = 100) -> np.ndarray:
        _, labels = self.split("train", 32)
        if self.multilabel:
            pos = labels.sum(axis=0)
            return ((len(labels) - pos) / pos).astype(np.float32)
        counts = np.bincount(labels, minlength=len(self.classes))
        return (counts.sum() / counts / len(counts)).astype(np.float32)

    def make_loader(self, dataset, data_dir=None, *, exp, split, sub=100, batch_size, image_size=224, train,
                    seed=0, num_workers=0, shard_index=0, shard_count=1, normalize=True,
                    persistent_workers=False) -> FakeLoader:
        # float images either way: the steps take float images as normalised (ttlx.training.steps.model_input)
        images, labels = self.split(split, image_size)
        loader = FakeLoader(images, labels, batch_size=batch_size, train=train, seed=seed,
                            multilabel=self.multilabel)
        loader.num_workers = num_workers or 0  # as ttlx's Loader on CPU (ttlx.data.loader_size.loader_workers)
        return loader
