"""A trained run, opened from its run dir: the one way commands above training read a run.

``ttlx eval``, ``ttlx predict``, the analyses (SVCCA, Grad-CAM) and the sweeps open a run dir with
:func:`open_trained_run` and ask the :class:`TrainedRun` for what they need: its configs, its dataset's
classes and stored form, its network at the best or latest checkpoint, the network it started from, and
loaders of its splits. Run dirs written by earlier versions open the same way (``config.json`` is read as
it was written; the stored form falls back to the prepared dataset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttlx.config import CHECKPOINTS, SPLITS, ModelConfig, TrainConfig
from ttlx.errors import ConfigError, DataError, UserError


@dataclass(frozen=True)
class TrainedRun:
    """A run dir's configs and dataset record (name, classes, multilabel, stored form), as ``config.json``
    holds them."""

    path: Path
    train: TrainConfig
    model: ModelConfig
    dataset: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.dataset["classes"])

    @property
    def multilabel(self) -> bool:
        return bool(self.dataset.get("multilabel", False))

    def network(self, checkpoint: str = "best"):
        """The run's network with the weights of its best (or latest) checkpoint."""
        return self.network_and_epoch(checkpoint)[0]

    def network_and_epoch(self, checkpoint: str = "best"):
        """(network, epoch of the checkpoint). Built with shapes only, then filled: the checkpoint holds every
        variable, so no random initialisation is compiled and thrown away (DenseNet201: 0.6-0.9 s to build
        instead of 4.4-4.7 s with a plain ``nnx.Rngs``; see ``ttlx.models.abstract.shape_only_rngs``)."""
        from ttlx.models import get_architecture
        from ttlx.models.abstract import abstract_model
        from ttlx.runs.checkpoint import assign_model_state, load_model_state

        check_checkpoint(checkpoint)
        model = abstract_model(get_architecture(self.model.arch), self.model)
        epoch, flat = load_model_state(self.path, checkpoint)
        assign_model_state(model, flat)
        return model, epoch

    def starting_network(self):
        """The network the run started from: its pretrained weights, and its seed for what they do not cover.

        Built by the same call as training, so a TF run's randomly initialised slim stages are its own.
        """
        from ttlx.models import create_model

        cfg, m = self.train, self.model
        pretrained = self.source.get("resolved", cfg.pretrained)  # chexpert: what it stood for then
        return create_model(cfg.model, cfg.trunc, num_classes=m.num_classes, head=m.head, pretrained=pretrained,
                            layerwise=cfg.layerwise, image_size=m.image_size, slim_from=cfg.slim_from,
                            slim_factor=cfg.slim_factor, dtype=cfg.dtype, seed=cfg.seed, window=m.window,
                            in_channels=m.in_channels, stochastic_depth=m.stochastic_depth)

    def data_dir(self, data_dir=None):
        return data_dir or self.train.data_dir

    def loader(self, split: str, *, batch_size: int, data_dir=None, data=None, **options):
        """An eval-transform loader of one split of the run's dataset and repeat (``data``: the data layer,
        ``ttlx.data.data_source()`` unless a test passes its own)."""
        from ttlx import data as data_layer

        check_split(split)
        data = data or data_layer.data_source()
        if self.dataset.get("volumetric"):  # windows of the run's length
            options = {"window": self.model.window, **options}
        if self.input_convention != "imagenet" and options.get("normalize", True):  # the source's scaling
            loader = self.loader(split, batch_size=batch_size, data_dir=data_dir, data=data,
                                 **{**options, "normalize": False})
            return ConventionLoader(loader, self.input_convention)
        return data.make_loader(self.train.dataset, self.data_dir(data_dir), exp=self.train.exp, split=split,
                                sub=self.train.sub, batch_size=batch_size, image_size=self.model.image_size,
                                train=False, num_workers=self.train.num_workers, **options)

    @property
    def source(self) -> dict[str, Any]:
        """What ``--pretrained`` resolved to when the run started (config.json; empty for older runs)."""
        import json

        return dict(json.loads((self.path / "config.json").read_text()).get("source") or {})

    @property
    def input_convention(self) -> str:
        """How images became network input for this run (``ttlx.data.augment.INPUT_CONVENTIONS``): the
        pretrained source's convention recorded in config.json, ``imagenet`` for runs that record none."""
        return str(self.source.get("input", "imagenet"))

    def stored_form(self, data_dir=None):
        """How the run's dataset stored its images: from ``config.json``, or (runs trained before ttlx recorded
        it) from the prepared dataset; a DataError saying what to pass when neither is there."""
        from ttlx.data.stored_form import StoredForm

        if self.dataset.get("volumetric"):
            raise DataError(f"{self.path} was trained on volumes, and image files cannot be its input; evaluate it "
                            "on its dataset's studies with ttlx eval.")
        if self.dataset.get("stored"):
            return StoredForm.from_dict(self.dataset["stored"])
        from ttlx.data import pipeline

        try:
            stored = pipeline.dataset_info(self.train.dataset, self.data_dir(data_dir)).stored
        except (UserError, KeyError) as err:
            raise DataError(f"{self.path} does not record how its dataset stored the images, and the prepared "
                            f"dataset is not at hand ({err}); pass --data-dir with the prepared "
                            f"'{self.train.dataset}'.") from None
        return StoredForm.from_dict(stored)


def open_trained_run(run_dir: str | Path) -> TrainedRun:
    """Open a run dir written by ``ttlx train``; a one-sentence error where it is not one."""
    from ttlx.runs.run_dir import RunDir

    path = Path(run_dir).absolute()  # orbax refuses relative checkpoint paths
    saved = RunDir(path).read_config()
    return TrainedRun(path, TrainConfig.from_dict(saved["train"]), ModelConfig.from_dict(saved["model"]),
                      saved.get("dataset", {}))


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}'; choose one of {', '.join(SPLITS)}.")


def check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"Unknown checkpoint '{checkpoint}'; choose {' or '.join(CHECKPOINTS)}.")


class ConventionLoader:
    """A uint8 loader whose batches are normalised with a source's input convention (chest-X-ray sources)."""

    def __init__(self, loader, convention: str):
        self.loader, self.convention = loader, convention

    def __iter__(self):
        from ttlx.data.augment import normalize

        for batch in self.loader:  # uint8 levels only: float images are already input (test stand-ins)
            image = batch["image"]
            yield {**batch, "image": normalize(image, self.convention)} if image.dtype == "uint8" else batch

    def __getattr__(self, name):
        return getattr(self.loader, name)
