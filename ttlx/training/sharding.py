"""Data parallelism over every device: a one-axis ``Mesh``, batches sharded on "data", state replicated.

One ``jax.jit`` step on sharded inputs is what ``pmap`` is built on since JAX 0.8; BatchNorm statistics
are then taken over the global batch, so N devices compute what one device computes. Across hosts
(after ``jax.distributed.initialize()``) each process feeds its own slice of the global batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ttlx.errors import ConfigError

DATA_AXIS = "data"
DEVICE_KEYS = ("image", "label", "mask", "label_mask")  # batch entries that go to the devices


def data_mesh() -> Mesh:
    """A mesh over all devices of all processes with one axis named "data"."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raise ConfigError unless the global batch divides evenly over the devices (and processes)."""
    devices = mesh.devices.size
    if batch_size % devices or batch_size % jax.process_count():
        multiple = devices * max(1, -(-batch_size // devices))
        raise ConfigError(
            f"Batch size {batch_size} does not divide across {devices} devices; choose a multiple of "
            f"{devices} (e.g. --bs {multiple})."
        )


def local_batch_size(batch_size: int) -> int:
    """The share of the global batch that this process loads."""
    return batch_size // jax.process_count()


def replicate(tree, mesh: Mesh):
    """Copy a pytree of arrays to every device."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Put this process's part of a global batch onto the devices, split along the batch axis."""
    sharding = batch_sharded(mesh)
    out = {}
    for key in DEVICE_KEYS:
        if key in batch:
            local = np.asarray(batch[key])
            out[key] = jax.make_array_from_process_local_data(sharding, local)
    return out


def to_host(x: jax.Array) -> np.ndarray:
    """A global (possibly multi-host) array as one numpy array on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def gather_strings(local: np.ndarray) -> np.ndarray:
    """This process's strings (one per row of its slice of a global batch) joined with every other process's,
    in process order: the global batch's strings, on every process."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    encoded = [s.encode() for s in local]
    width = int(np.max(multihost_utils.process_allgather(np.asarray(max(map(len, encoded), default=0)))))
    rows = np.zeros((len(encoded), max(width, 1)), np.uint8)
    for i, data in enumerate(encoded):
        rows[i, :len(data)] = np.frombuffer(data, np.uint8)
    everyone = np.asarray(multihost_utils.process_allgather(rows, tiled=True))
    return np.asarray([bytes(row).rstrip(b"\0").decode() for row in everyone])
