"""A train state as a flat dict of named arrays, and that dict packed into one array per dtype for writing.

Keys are '.'-joined state paths (``params.layer1.0.conv1.kernel``). Checkpoints write the arrays packed:
:func:`pack` copies them to host memory and concatenates them into one flat array per dtype (item ``arrays``,
keys ``packed.float32`` and so on), with their keys, dtypes and shapes in a JSON item ``layout``;
:meth:`RunCheckpoints.restore` splits them back into the same flat dict. Orbax spends about 1.5 ms of Python per
array in its background thread; for the 600 arrays of a ResNet50 FTL train state that held the interpreter lock
for about a second per step written, and on a GPU the training loop, whose host needs the lock to launch each
step, ran its next epoch up to 40% slower meanwhile (benchmarks/RESULTS.md section 10). Steps written before
packing (one orbax array per key, no ``layout`` item) still restore.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ttlx.errors import WeightsError

PACKED = "packed."  # key prefix of the packed arrays in a step's ``arrays`` item


def key_name(keypath) -> str:
    """'layer1.0.conv1.kernel' from a jax key path; the '.value' of an nnx Variable is dropped."""
    parts = []
    for key in keypath:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        else:  # FlattenedIndexKey
            parts.append(str(key.key))
    if parts and parts[-1] == "value":
        parts.pop()
    return ".".join(parts)


def flatten(tree) -> dict[str, Any]:
    """A pytree as a flat dict keyed by :func:`key_name`."""
    flat = {}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = key_name(keypath)
        if name in flat:
            raise ValueError(f"Two state entries share the checkpoint key '{name}'.")
        flat[name] = leaf
    return flat


def unflatten_like(template, flat: dict[str, Any]):
    """Put the values of ``flat`` into the structure of ``template`` (keys as made by :func:`flatten`)."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = [key_name(path) for path, _ in paths]
    missing = [k for k in keys if k not in flat]
    if missing:
        raise WeightsError(f"The checkpoint lacks {len(missing)} entries of this model (e.g. "
                           f"'{missing[0]}'); it was written by a different model or ttlx version.")
    return jax.tree_util.tree_unflatten(treedef, [flat[k] for k in keys])


def pack(arrays: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
    """Host copies of a flat dict of arrays, concatenated into one flat numpy array per dtype (keyed
    ``packed.DTYPE``), and the layout that :func:`unpack` needs. The copies are made before this returns.
    Arrays must be fully replicated (as ttlx's data-parallel state is), so any process holds all values."""
    keys = list(arrays)
    entries, groups = [], {}
    for key, value in zip(keys, jax.device_get([arrays[k] for k in keys])):  # copies started together
        value = np.asarray(value)
        entries.append([key, value.dtype.name, list(value.shape)])
        groups.setdefault(value.dtype.name, []).append(value.reshape(-1))
    packed = {PACKED + name: np.concatenate(parts) for name, parts in groups.items()}
    return packed, {"format": "packed-by-dtype", "entries": entries}


def unpack(packed: dict[str, Any], layout: dict) -> dict[str, np.ndarray]:
    """The flat dict of numpy arrays that :func:`pack` packed (views into the packed arrays)."""
    data_of = {name[len(PACKED):]: np.asarray(data) for name, data in packed.items()}
    offsets, flat = {}, {}
    for key, dtype, shape in layout["entries"]:
        data = data_of[dtype]
        start = offsets.get(dtype, 0)
        size = int(np.prod(shape, dtype=np.int64))
        if start + size > data.size:
            raise ValueError(f"the packed {dtype} array holds {data.size} values, too few for '{key}'")
        flat[key] = data[start:start + size].reshape(shape)
        offsets[dtype] = start + size
    return flat


def placed_like(flat: dict[str, np.ndarray], template: dict[str, Any]) -> dict[str, jax.Array]:
    """``flat``'s host arrays on the devices and shardings of ``template``'s arrays (same keys), in their
    dtypes (as orbax restores into a target); a missing key or a shape that differs raises ValueError."""
    placed = {}
    for key, like in template.items():
        value = flat.get(key)
        if value is None:
            raise ValueError(f"the checkpoint lacks '{key}'")
        if value.shape != tuple(like.shape):
            raise ValueError(f"'{key}' has shape {list(value.shape)} in the checkpoint, {list(like.shape)} here")
        value = value.astype(like.dtype, copy=False)
        placed[key] = jax.make_array_from_callback(value.shape, like.sharding, lambda index, v=value: v[index])
    return placed
