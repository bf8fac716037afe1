"""The TFDS builder that stores a spec's examples as ArrayRecord (encoded image bytes, no TensorFlow)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttlx.data import images
from ttlx.data.spec import Catalog, DatasetSpec, Example

RECORDS_SPLIT = "images"  # one TFDS split holds every image; ttlx splits are chosen at load time
VERSION = "1.0.0"
_CHUNK = 256  # images decoded ahead of the writer; bounds memory while the threads stay busy


@dataclass
class BuildResult:
    """What the build wrote: catalog positions in record order, and the images it could not read."""

    written: list[int] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    records_dir: Path | None = None


def builder_name(dataset: str) -> str:
    return "ttlx_" + "".join(c if c.isalnum() else "_" for c in dataset.lower())


def build_records(
    root: Path,
    dataset: str,
    spec: DatasetSpec,
    catalog: Catalog,
    *,
    max_size: int,
    advance: Callable[[int], None] = lambda n: None,
) -> BuildResult:
    """Write every readable example of ``catalog`` under ``root`` and report the unreadable ones."""
    if spec.volumetric:  # CT/MRI volumes: a memory-mapped int16 store, not ArrayRecord (ttlx.data.volumes)
        from ttlx.data.volumes import build_volumes

        return build_volumes(root, dataset, spec, catalog, max_size=max_size, advance=advance)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    result = BuildResult()
    encoded = _encoded_examples(spec, catalog.examples, max_size, result, advance)
    builder_cls = _builder_class(dataset, spec, catalog.classes, encoded)
    builder = builder_cls(data_dir=os.fspath(root), file_format="array_record")
    try:
        with warnings.catch_warnings():  # open_source reports over-large images by name; PIL need not warn
            warnings.simplefilter("ignore", images.Image.DecompressionBombWarning)
            builder.download_and_prepare(download_dir=root / ".dl")
    except ValueError as err:  # TFDS refuses a split with no examples: every image was bad
        if result.written:
            raise
        if not result.bad:
            raise RuntimeError(f"TFDS could not build '{dataset}': {err}") from err
    result.records_dir = Path(builder.data_dir)
    return result


def _encoded_examples(
    spec: DatasetSpec, examples: list[Example], max_size: int, result: BuildResult, advance
) -> Iterator[tuple[int, dict]]:
    """(key, features) for each readable example, decoded and re-encoded on a thread pool."""

    def encode(position: int):
        example = examples[position]
        try:
            image = images.open_source(example.image, shorter_at_least=max_size, pad_square=spec.pad_square)
            image = images.stored_image(image, channels=spec.channels, max_size=max_size, pad_square=spec.pad_square)
            return position, images.encode(image, spec.encoding), None
        except images.BadImage as err:
            return position, None, str(err)

    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        for start in range(0, len(examples), _CHUNK):
            chunk = range(start, min(start + _CHUNK, len(examples)))
            for position, data, problem in pool.map(encode, chunk):
                advance(1)
                example = examples[position]
                if problem is not None:
                    result.bad.append((example.file_name, problem))
                    continue
                result.written.append(position)
                yield position, _features(example, data)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C, drop the queued images at once


def _features(example: Example, data: bytes) -> dict:
    label = np.asarray(example.label, np.int8) if isinstance(example.label, tuple) else int(example.label)
    return {"image": data, "label": label, "id": example.id, "group": example.group_key}


def _builder_class(dataset: str, spec: DatasetSpec, classes: tuple[str, ...], examples: Iterator):
    import tensorflow_datasets as tfds

    if spec.multilabel:
        label = tfds.features.Tensor(shape=(len(classes),), dtype=np.int8)
    else:
        label = tfds.features.ClassLabel(names=list(classes))
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, spec.channels), encoding_format=spec.encoding),
            "label": label,
            "id": tfds.features.Text(),
            "group": tfds.features.Text(),
        }
    )

    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = builder_name(dataset)
        VERSION = tfds.core.Version(VERSION)

        def _info(self):
            # Keys are catalog positions and shuffling is off, so records keep the catalog's order.
            return tfds.core.DatasetInfo(
                builder=self, description=spec.description, features=features, disable_shuffling=True
            )

        def _split_generators(self, dl_manager):
            return {RECORDS_SPLIT: self._generate_examples()}

        def _generate_examples(self):
            yield from examples

        def _log_download_bytes(self):  # ttlx shows its own progress bar
            pass

        def _log_download_done(self):
            pass

    return Builder
