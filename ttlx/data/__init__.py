"""The data layer: prepared datasets, their splits, and loaders of batches.

``data_source()`` is what the layers above read datasets through (``dataset_info``, ``class_weights``,
``split_ids``, ``make_loader``); tests swap it for fake data. Dataset definitions live in
``ttlx.data.datasets``, one module each, registered through entry points as a plugin's would be. The names
below load on first use, so importing a dataset definition does not start grain or TFDS.
"""

from __future__ import annotations

_PIPELINE_NAMES = ("DatasetInfo", "dataset_info", "class_weights", "split_ids", "make_loader")
__all__ = ["data_source", *_PIPELINE_NAMES]


def data_source():
    """The data layer's functions (``dataset_info``, ``class_weights``, ``split_ids``, ``make_loader``)."""
    from ttlx.data import pipeline

    return pipeline


def __getattr__(name: str):
    if name in _PIPELINE_NAMES:
        return getattr(data_source(), name)
    raise AttributeError(f"module 'ttlx.data' has no attribute '{name}'")
