"""Reading whole pickled torch modules (``torch.save(model)``) without torch and without running their code.

torchxrayvision's DenseNet files and the reference code's ``best.pt`` (``DataParallel(Sequential(backbone,
head))``) hold modules, not state dicts. This reader extends ``torchfile``'s tensor unpickler (both torch
formats): a class on :data:`MODULE_CLASSES` is rebuilt as an inert :class:`ModuleRecord` that keeps only
its ``_parameters``, ``_buffers`` and ``_modules``; its own code (``__init__``, ``__setstate__``, hooks) never
runs and its module is never imported. Every other global (``os.system``, ``builtins.eval``, ``subprocess``,
an unknown class) is refused when the pickle names it, before anything it names can execute.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ttlx.errors import WeightsError
from ttlx.models.weights import torchfile

_NN = "torch.nn.modules."
MODULE_CLASSES = frozenset({
    *(_NN + name for name in (
        "container.Sequential", "container.ModuleList", "container.ModuleDict", "conv.Conv2d",
        "batchnorm.BatchNorm2d", "linear.Linear", "linear.Identity", "activation.ReLU", "activation.Sigmoid",
        "pooling.MaxPool2d", "pooling.AvgPool2d", "pooling.AdaptiveAvgPool2d", "flatten.Flatten",
        "dropout.Dropout")),
    "torch.nn.parallel.data_parallel.DataParallel",
    "torch.nn.parallel.distributed.DistributedDataParallel",
    *("torchvision.models.resnet." + name for name in ("ResNet", "Bottleneck", "BasicBlock")),
    *("torchvision.models.densenet." + name for name in ("DenseNet", "_DenseLayer", "_DenseBlock", "_Transition")),
    *("torchxrayvision.models." + name for name in ("DenseNet", "_DenseLayer", "_DenseBlock", "_Transition",
                                                    "ResNet")),
})
# buffers that are not weights: torchxrayvision's operating-point thresholds
SKIPPED_BUFFERS = ("op_threshs",)


class ModuleRecord:
    """An inert stand-in for one allow-listed module: its class name and the state the pickle gave it."""

    torch_class = ""

    def __init__(self, *args, **kwargs):  # a REDUCE would call the class: only NEWOBJ (no code) is accepted
        raise torchfile._Refused(f"{self.torch_class} called with arguments")

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"the state of {self.torch_class} is not a dict")
        self.state = state

    def children(self) -> dict[str, Any]:
        return dict(getattr(self, "state", {}).get("_modules") or {})


_RECORDS: dict[str, type[ModuleRecord]] = {}


def record_class(qualified: str) -> type[ModuleRecord]:
    if qualified not in _RECORDS:
        _RECORDS[qualified] = type(qualified.rsplit(".", 1)[-1], (ModuleRecord,), {"torch_class": qualified})
    return _RECORDS[qualified]


def _device(*args) -> str:
    """``torch.device('cuda', 0)`` in a DataParallel's fields, kept as text."""
    return ":".join(str(a) for a in args if isinstance(a, (str, int)))


def _names(items=()) -> set:
    """``builtins.set`` (a module's ``_non_persistent_buffers_set``): names only."""
    items = list(items)
    if not all(isinstance(i, str) for i in items):
        raise torchfile._Refused("a set of objects other than names")
    return set(items)


PLAIN_GLOBALS = {("torch", "device"): _device, ("builtins", "set"): _names, ("__builtin__", "set"): _names}


class _ModuleUnpickler(torchfile._TensorUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in MODULE_CLASSES:
            return record_class(qualified)
        if (module, name) in PLAIN_GLOBALS:
            return PLAIN_GLOBALS[(module, name)]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # the legacy format names a module's class with its source; the source is ignored
            cls = pid[1] if len(pid) > 1 else None
            if isinstance(cls, type) and issubclass(cls, ModuleRecord):
                return cls
            raise torchfile._Refused("a module class that is not allow-listed")
        return super().persistent_load(pid)


def module_state_dict(record: ModuleRecord, prefix: str = "") -> dict[str, np.ndarray]:
    """The state dict ``record.state_dict()`` would give: parameters and persistent buffers, depth first."""
    out: dict[str, np.ndarray] = {}
    state = getattr(record, "state", {})
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or name in skipped or (group == "_buffers" and name in SKIPPED_BUFFERS):
                continue
            if not isinstance(value, torchfile._PendingTensor):
                raise pickle.UnpicklingError(f"{prefix}{name} of {record.torch_class} is not a tensor")
            out[prefix + name] = value.materialise()
    for name, child in record.children().items():
        if child is None:
            continue
        if not isinstance(child, ModuleRecord):
            raise pickle.UnpicklingError(f"{prefix}{name} is not a module")
        out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def _module_in(obj: Any) -> ModuleRecord | None:
    if isinstance(obj, ModuleRecord):
        return obj
    if isinstance(obj, dict):  # a checkpoint dict holding the whole model
        for key in ("model", "module", "state_dict", "net"):
            if isinstance(obj.get(key), ModuleRecord):
                return obj[key]
    return None


def read_module_file(path: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """(state dict, class names from the top) of a pickled module, or of a plain state dict, never running code.

    Refused with one sentence: any global outside the allow-list, a truncated or corrupt file.
    """
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(4)
        is_zip = head == torchfile.ZIP_MAGIC
        if not is_zip and head[:1] != pickle.PROTO:
            raise WeightsError(f"{path} is not a file torch.save wrote; give a torch .pt/.pth file.")
        file.seek(0)
        try:
            load = torchfile._load_zip if is_zip else torchfile._load_sequential
            obj = load(file, _ModuleUnpickler)
            record = _module_in(obj)
            if record is None:
                return torchfile.state_dict_in(obj, path), []
            return module_state_dict(record), _class_path(record)
        except torchfile._Refused as err:  # the sentence torchfile gives: a module's tensors are kept, never code
            raise WeightsError(
                f"{path} holds a pickled {err}, not only tensors; ttlx never unpickles arbitrary objects, "
                f"so save the state dict alone (torch.save(model.state_dict(), ...)) or as .safetensors."
            ) from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError,
                IndexError, AttributeError, OSError) as err:
            raise WeightsError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); "
                               f"copy it again.") from None


def _class_path(record: ModuleRecord) -> list[str]:
    """Class names from the top down through wrappers: DataParallel, Sequential, ResNet."""
    names = [record.torch_class]
    while record.torch_class.endswith(("DataParallel", "Sequential")) and record.children():
        first = next(iter(record.children().values()))
        if not isinstance(first, ModuleRecord):
            break
        record = first
        names.append(record.torch_class)
    return names


def backbone_keys(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """A ``Sequential(backbone, head)`` state dict as the backbone's torchvision keys, and the head keys dropped.

    ``module.`` (DataParallel) is removed first. Keys ``0.*`` are the backbone, any other index is the source
    head; a backbone that is torchvision's ``features`` (``0.conv0``, ``0.denseblock1``) gets ``features.``.
    A state dict without numbered parts is returned as it is.
    """
    state = OrderedDict((k.removeprefix("module."), v) for k, v in state.items())
    tops = {k.split(".", 1)[0] for k in state}
    if not tops or not all(t.isdigit() for t in tops) or "0" not in tops:
        return dict(state), []
    backbone = {k[2:]: v for k, v in state.items() if k.startswith("0.")}
    head = [k for k in state if not k.startswith("0.")]
    if any(k.startswith(("conv0.", "denseblock")) for k in backbone):
        backbone = {f"features.{k}": v for k, v in backbone.items()}
    return backbone, head
