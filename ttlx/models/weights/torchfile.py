"""Reading PyTorch ``.pth`` state dicts without torch: an unpickler that rebuilds tensors and nothing else.

Both of torch's formats are read: the zip archive (``torch.save`` since 1.6: ``data.pkl`` plus one raw
record per storage) and the older sequential format (a magic number, the pickled object, then the
storages back to back), which old torchvision files such as ``densenet201-c1103571.pth`` use. Only the
globals needed to rebuild tensors are resolved; any other object in the pickle is refused, so a file
cannot run code when it is read (the guarantee of ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from ttlx.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
ZIP_MAGIC = b"PK\x03\x04"
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}


class _Frozen:
    """Objects built while unpickling refuse BUILD, so a pickle cannot rewrite their fields."""

    def __setstate__(self, state):
        raise pickle.UnpicklingError("state assignment on a tensor part")


class _StorageType(_Frozen):
    def __init__(self, name: str):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage(_Frozen):
    """A flat typed buffer, or a slice of one; filled at once (zip) or after the pickle (sequential)."""

    def __init__(self, dtype: np.dtype, numel: int, data: np.ndarray | None = None,
                 root: _Storage | None = None, offset: int = 0):
        self.dtype, self.numel, self.data, self.root, self.offset = dtype, int(numel), data, root, int(offset)

    def array(self) -> np.ndarray:
        data = self.data if self.root is None else self.root.array()[self.offset:self.offset + self.numel]
        if data is None or data.size < self.numel:
            raise pickle.UnpicklingError("a storage is shorter than its header says")
        return data


class _PendingTensor(_Frozen):
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialise(self) -> np.ndarray:
        data = self.storage.array()
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or min(self.stride, default=0) < 0 or last >= data.size:
            raise pickle.UnpicklingError("a tensor reaches outside its storage")
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.size, [s * item for s in self.stride])
        return np.array(view, order="C")  # a contiguous copy that owns its memory


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> _PendingTensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _PendingTensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storage_loader):
        super().__init__(file)
        self._load_storage = storage_loader
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or not isinstance(pid[1], _StorageType):
            raise _Refused(f"a persistent object of kind {kind!r}")
        storage_type, key, _location, numel = pid[1:5]
        key = key.decode() if isinstance(key, bytes) else str(key)
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = self._load_storage(key, storage_type.dtype, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return root
        _view_key, offset, view_numel = view  # old files kept storage views; rebuild them as slices
        return _Storage(root.dtype, view_numel, root=root, offset=offset)


class _Refused(pickle.UnpicklingError):
    """The pickle asked for something other than tensor data."""


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _PendingTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _load_zip(file: BinaryIO, unpickler_class: type[_TensorUnpickler] | None = None) -> Any:
    with zipfile.ZipFile(file) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise pickle.UnpicklingError("no data.pkl in the archive")
        prefix = pickles[0][: -len("data.pkl")]
        has_order = prefix + "byteorder" in names
        order = archive.read(prefix + "byteorder").decode().strip() if has_order else "little"

        def load_storage(key: str, dtype: np.dtype, numel: int) -> _Storage:
            raw = archive.read(f"{prefix}data/{key}")
            data = np.frombuffer(raw, dtype.newbyteorder("<" if order == "little" else ">"))
            return _Storage(dtype, numel, data.astype(dtype, copy=False))

        unpickler = (unpickler_class or _TensorUnpickler)(io.BytesIO(archive.read(pickles[0])), load_storage)
        return _materialise(unpickler.load())


def _no_storage(key, dtype, numel):
    raise pickle.UnpicklingError("a storage where only plain values belong")


def _load_sequential(file: BinaryIO, unpickler_class: type[_TensorUnpickler] | None = None) -> Any:
    def plain() -> Any:  # the header pickles hold plain values; read them through the same guard
        return _TensorUnpickler(file, _no_storage).load()

    if plain() != LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a torch file")
    plain()  # protocol version
    plain()  # sys info (byte order and type sizes)
    unpickler = (unpickler_class or _TensorUnpickler)(file, lambda key, dtype, numel: _Storage(dtype, numel))
    result = unpickler.load()
    for key in plain():
        storage = unpickler.storages[str(key)]
        numel = int(np.frombuffer(file.read(8), "<i8")[0])
        raw = file.read(numel * storage.dtype.itemsize)
        storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<")).astype(storage.dtype, copy=False)
    return _materialise(result)


def load_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read a torch-saved state dict (zip or sequential format) into numpy arrays, never running code.

    A checkpoint dict holding the weights under ``state_dict`` or ``model`` is unwrapped.
    """
    path = Path(path)
    with open(path, "rb") as file:
        head = file.read(4)
        is_zip = head == ZIP_MAGIC  # a zip cut short still starts like one: report it as truncated
        if not is_zip and head[:1] != pickle.PROTO:  # torch's files are zip archives or pickles
            raise WeightsError(f"{path} is not a file torch.save wrote (nor safetensors); give a torchvision "
                               f".pth or .safetensors state dict.")
        file.seek(0)
        try:
            obj = _load_zip(file) if is_zip else _load_sequential(file)
        except _Refused as err:
            raise WeightsError(
                f"{path} holds a pickled {err}, not only tensors; ttlx never unpickles arbitrary objects, "
                f"so save the state dict alone (torch.save(model.state_dict(), ...)) or as .safetensors."
            ) from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError,
                IndexError, AttributeError, OSError) as err:
            raise WeightsError(
                f"{path} is truncated or corrupt ({type(err).__name__}: {err}); download it again."
            ) from None
    return state_dict_in(obj, path)


def state_dict_in(obj: Any, path: Path) -> dict[str, np.ndarray]:
    """The name -> array mapping inside a loaded object (a state dict or a checkpoint holding one)."""
    for candidate in (obj, *(obj.get(k) for k in ("state_dict", "model") if isinstance(obj, dict))):
        if isinstance(candidate, dict) and candidate and all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in candidate.items()
        ):
            return dict(candidate)
    raise WeightsError(
        f"{path} holds no state dict (a mapping of names to tensors); save model.state_dict() instead."
    )
