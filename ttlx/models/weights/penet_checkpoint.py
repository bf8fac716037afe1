"""PENet's own checkpoint files (``.pth.tar``) as state dicts that ttlx's ``penet`` loads, without torch.

The PENet authors published a Kinetics-600 checkpoint (``xnet_kin_90.pth.tar``) and the trained PE model
as torch 0.4 files: a dict with the weights under ``model_state`` (keys prefixed ``module.`` by
DataParallel) next to ``optimizer``, ``lr_scheduler``, ``model_args``, ``ckpt_info`` and ``model_name``.
Those other entries are read through ``torchfile``'s tensor unpickler with one change: a class or function
they name (torch 0.4 pickled a LambdaLR's ``functools.partial`` lambdas) becomes an inert stand-in that
keeps and runs nothing, since nothing but tensors is used. No code from the file runs.

Keys are renamed to ttlx's modules: the Kinetics file's ``xnet_blocks`` become ``penet_blocks`` (as PENet's
own loader does), the SE block's ``excite.0``/``excite.2`` become ``fc1``/``fc2`` and ``classifier.fc``
becomes ``fc``. A plain ``state_dict()`` of ``PENetClassifier`` is renamed the same way.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ttlx.errors import WeightsError
from ttlx.models.weights import torchfile

KEY_RENAMES = (("xnet_blocks.", "penet_blocks."), (".se_block.excite.0.", ".se_block.fc1."),
               (".se_block.excite.2.", ".se_block.fc2."))
CLASSIFIER = ("classifier.fc.", "fc.")
CHECKPOINT_ENTRIES = ("model_state", "state_dict")


def ttlx_keys(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A PENetClassifier state dict (``module.``-prefixed or not, either block name) with ttlx's key names."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for old, new in KEY_RENAMES:
            key = key.replace(old, new)
        if key.startswith(CLASSIFIER[0]):
            key = CLASSIFIER[1] + key[len(CLASSIFIER[0]):]
        out[key] = value
    return out


class Inert:
    """What a checkpoint's unused entries get for a class or function they name: it is built from any
    arguments and keeps none of them; nothing of the named object is imported or run."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert(qualified: str) -> type[Inert]:
    return type(qualified.rsplit(".", 1)[-1], (Inert,), {"qualified": qualified})


class _CheckpointUnpickler(torchfile._TensorUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except torchfile._Refused:
            return _inert(f"{module}.{name}")


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state dict with ttlx's key names, the checkpoint's ``model_args``) of a PENet ``.pth.tar`` file or a
    saved ``state_dict()``, either torch format; one sentence for a file that is neither."""
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(4)
        file.seek(0)
        try:
            if head == torchfile.ZIP_MAGIC:
                obj = torchfile._load_zip(file, _CheckpointUnpickler)
            elif head[:1] == pickle.PROTO:
                obj = torchfile._load_sequential(file, _CheckpointUnpickler)
            else:
                raise WeightsError(f"{path} is not a file torch.save wrote; give a PENet .pth.tar checkpoint.")
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError,
                IndexError, AttributeError, OSError) as err:
            raise WeightsError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); "
                               f"copy it again.") from None
    model_args = {}
    if isinstance(obj, dict):
        args = obj.get("model_args")
        model_args = {k: v for k, v in args.items() if isinstance(v, int | float | str | bool)} \
            if isinstance(args, dict) else {}
        for entry in CHECKPOINT_ENTRIES:
            if isinstance(obj.get(entry), dict):
                obj = obj[entry]
                break
    if not (isinstance(obj, dict) and obj and all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())):
        raise WeightsError(f"{path} holds no PENet weights (no model_state of tensors); give a checkpoint "
                           f"PENet's training wrote or a saved state_dict().")
    return ttlx_keys(obj), model_args
