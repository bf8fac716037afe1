"""Random access to the stored records of a prepared dataset, opened lazily in each process."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ttlx.data.builder import RECORDS_SPLIT

# One thread of a process opens the records (and imports tensorflow_datasets) at a time. Two of grain's
# prefetch threads opening them together deadlocked a worker process on Python 3.11: one held the import
# lock of tensorflow_datasets and waited for the lock of an etils lazy module's cached_property, which the
# other held while it waited for the import.
_OPEN_LOCK = threading.Lock()


class RecordReader:
    """(encoded image, label, id) by record position; pickles as its path so grain workers reopen it."""

    def __init__(self, records_dir: Path):
        self.records_dir = os.fspath(records_dir)
        self._source = None

    def __getstate__(self) -> dict:
        return {"records_dir": self.records_dir, "_source": None}

    def _open(self):
        import tensorflow_datasets as tfds

        builder = tfds.builder_from_directory(self.records_dir)
        # Skip TFDS's image decoding: the pipeline decodes with PIL at a reduced (draft) scale.
        return builder.as_data_source(split=RECORDS_SPLIT, decoders={"image": tfds.decode.SkipDecoding()})

    def _opened(self):
        if self._source is None:
            with _OPEN_LOCK:
                if self._source is None:
                    self._source = self._open()
        return self._source

    def __len__(self) -> int:
        return len(self._opened())

    def read(self, position: int) -> tuple[bytes, np.ndarray | int, str]:
        record = self._opened()[position]
        example_id = record["id"]
        return (
            record["image"],
            record["label"],
            example_id.decode() if isinstance(example_id, bytes) else example_id,
        )
