"""Orbax checkpoints of a run: ``checkpoints/latest`` (everything needed to resume) and ``checkpoints/best``.

Every checkpoint holds a flat dict of arrays keyed by '.'-joined state paths
(``params.layer1.0.conv1.kernel``) next to a JSON item. ``latest`` holds the model, optimizer state (with
its learning rate) and RNG key as arrays and, as JSON, the epoch, plateau tracker, data-iterator state and
metric history. ``best`` holds the model state of the epoch with the lowest validation loss. A new step is
written to a temporary directory and renamed when complete (orbax); older steps are deleted only after
that, so a kill or a full disk during a save leaves the previous checkpoint usable. A new best step stays
next to the old one until the ``latest`` step of the same epoch is complete, so a resumed run never sees
a best checkpoint newer than its own history.

Steps are written in the background (orbax's asynchronous checkpointing): :meth:`RunCheckpoints.save`
returns once the arrays are copied to host memory, so the next train step may reuse (donate) their device
buffers, and the files are written while training goes on. A ResNet50 FTL ``latest`` step (about 300 MB)
took 1.8-3.3 s to write on a 2-core CPU machine, 0.09-0.11 s of which was orbax's copy (benchmarks/RESULTS.md
section 9; the packing below, which makes the copy, takes 0.08-0.21 s there, section 10).
:meth:`RunCheckpoints.finish` waits for the steps being written and reports a failed one; every other method
waits for them first, so nothing reads or prunes a step that is not complete.

The arrays are written packed by dtype (:mod:`ttlx.runs.state_arrays`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ttlx.config import BEST, LATEST, ModelConfig
from ttlx.errors import UserError, WeightsError
from ttlx.runs.save_errors import CheckpointSaveError, save_error  # noqa: F401 - raised from here
from ttlx.runs.state_arrays import flatten, pack, placed_like, unflatten_like, unpack


class DamagedCheckpointError(WeightsError):
    """A checkpoint whose files are missing or corrupt."""


def manager_options(ocp, name: str):
    """Options of the ``name`` manager. Its barriers across processes get ``name`` as their prefix: orbax names
    them after the step (``async_commit_complete.4``, ``ThreadSaveMultiHostValueHolder:set_value_start``), and
    the ``best`` and ``latest`` steps of one epoch are written at the same time by two background threads,
    whose barriers of one name then collided ("Barrier ... is already ongoing", now and then)."""
    return ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=True, cleanup_tmp_directories=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=f"ttlx_{name}"))


class RunCheckpoints:
    """The ``best`` and ``latest`` checkpoint managers of one run dir."""

    def __init__(self, directory: str | Path):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).absolute()  # orbax refuses relative paths
        self._ocp = ocp
        self.managers = {
            name: ocp.CheckpointManager(self.directory / name, options=manager_options(ocp, name), item_handlers={
                "arrays": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                "layout": ocp.JsonCheckpointHandler()})
            for name in (LATEST, BEST)
        }
        self._writing: dict[str, int] = {}  # which -> the epoch whose step is being written

    def epoch(self, which: str = LATEST) -> int | None:
        """The newest complete step of ``which`` (waits for a step being written)."""
        self.finish()
        return self.managers[which].latest_step()

    def steps(self, which: str = LATEST) -> list[int]:
        """The committed steps of ``which``, oldest first (a step whose save never finished is not one)."""
        self.finish()
        self.managers[which].reload()
        return sorted(self.managers[which].all_steps())

    def delete(self, which: str, epoch: int) -> None:
        self.finish()
        self.managers[which].delete(epoch)

    def save(self, which: str, epoch: int, arrays: dict, meta: dict) -> None:
        """Start writing one step of ``which``; returns once ``arrays`` are copied to host memory (packed,
        :func:`pack`), while the files are written in the background (:meth:`finish` waits for them and
        reports a failure). Older steps stay until :meth:`keep_only`; a failed save keeps them."""
        self.finish(which)  # one step of ``which`` at a time; its earlier failure is reported first
        ocp, manager = self._ocp, self.managers[which]
        packed, layout = pack(arrays)
        try:
            manager.save(epoch, args=ocp.args.Composite(arrays=ocp.args.StandardSave(packed),
                                                        meta=ocp.args.JsonSave(meta),
                                                        layout=ocp.args.JsonSave(layout)), force=True)
        except Exception as err:
            raise save_error(err, self.directory / which, epoch, self._committed_before(which, epoch)) from err
        self._writing[which] = epoch

    def writing(self) -> bool:
        """Whether a step is still being written (never waits)."""
        return any(self.managers[which].is_saving_in_progress() for which in self._writing)

    def finish(self, which: str | None = None) -> None:
        """Wait for the steps being written (of ``which``, default all); a failed one raises
        :class:`CheckpointSaveError` once all are done, and the steps before it stay."""
        names = [which] if which is not None else list(self._writing)
        writing = {name: self._writing.pop(name) for name in names if name in self._writing}
        failed = None
        for which, epoch in writing.items():
            manager = self.managers[which]
            try:
                manager.wait_until_finished()
                manager.check_for_errors()
            except Exception as err:
                failed = failed or (err, which, epoch)
        if failed:
            err, which, epoch = failed
            raise save_error(err, self.directory / which, epoch, self._committed_before(which, epoch)) from err

    def _committed_before(self, which: str, epoch: int) -> int | None:
        manager = self.managers[which]
        manager.reload()
        return max((step for step in manager.all_steps() if step < epoch), default=None)

    def keep_only(self, which: str, epochs: set[int | None]) -> None:
        """Delete every step of ``which`` except ``epochs`` (waits for the steps being written first)."""
        self.finish()
        manager = self.managers[which]
        for step in manager.all_steps():
            if step not in epochs:
                manager.delete(step)

    def restore(self, which: str, template: dict | None = None, epoch: int | None = None) -> tuple[dict, dict]:
        """(arrays, meta) of step ``epoch`` (default: the newest); ``template`` (flat dict of arrays) sets
        shapes, dtypes and shardings, else the arrays are numpy arrays in host memory."""
        self.finish()
        ocp, manager = self._ocp, self.managers[which]
        epoch = manager.latest_step() if epoch is None else epoch
        if epoch is None:
            raise WeightsError(f"No {which} checkpoint in {self.directory}; train the run first.")
        if not (self.directory / which / str(epoch) / "layout").exists():
            return self._restore_unpacked(which, epoch, template)
        restored = manager.restore(epoch, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore(), layout=ocp.args.JsonRestore()))
        flat = unpack(restored["arrays"], restored["layout"])
        return (flat if template is None else placed_like(flat, template)), dict(restored["meta"])

    def _restore_unpacked(self, which: str, epoch: int, template: dict | None) -> tuple[dict, dict]:
        """A step written before packing: one orbax array per key."""
        ocp, manager = self._ocp, self.managers[which]
        if template is not None:
            target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding)
                      for k, v in template.items()}
        else:  # onto this process's first device, whatever device layout wrote the checkpoint
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device)
                      for k, v in manager.item_metadata(epoch)["arrays"].items()}
        restored = manager.restore(epoch, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(target),
                                                                  meta=ocp.args.JsonRestore()))
        arrays = dict(restored["arrays"])
        return (arrays if template is not None else {k: np.asarray(v) for k, v in arrays.items()}), \
            dict(restored["meta"])

    def close(self) -> None:
        """Wait for the steps being written (a failure is logged by orbax, not raised) and release the
        managers; call :meth:`finish` first to have a failure reported."""
        self._writing = {}
        for manager in self.managers.values():
            try:
                manager.close()
            except Exception:  # noqa: BLE001 - the failed step is not committed; the earlier ones stay
                pass


def model_state_arrays(params, rest) -> dict[str, Any]:
    """The model state (parameters and BatchNorm statistics) as one flat dict keyed by nnx path."""
    return {**flatten(params), **flatten(rest)}


def assign_model_state(model, flat: dict[str, Any]) -> None:
    """Load a flat model-state dict into ``model`` (which may be abstract, from ``nnx.eval_shape``); every
    variable must be present with its shape."""
    from flax import nnx

    state = nnx.state(model)
    current = flatten(state)
    problems = [k for k in current if k not in flat or tuple(np.shape(flat[k])) != tuple(current[k].shape)]
    if problems:
        raise WeightsError(f"The checkpoint does not fit this model at '{problems[0]}' "
                           f"({len(problems)} mismatches); it was trained with a different configuration.")
    nnx.update(model, unflatten_like(state, {k: jnp.asarray(flat[k], dtype=current[k].dtype) for k in current}))


def load_model_state(run_dir: str | Path, which: str = BEST) -> tuple[int, dict[str, np.ndarray]]:
    """(epoch, flat model state as numpy) of a run dir's ``best`` or ``latest`` checkpoint."""
    directory = Path(run_dir).absolute() / "checkpoints"  # orbax refuses relative paths
    if not (directory / which).is_dir():
        raise WeightsError(f"{run_dir} holds no {which} checkpoint; train it with `ttlx train` first.")
    checkpoints = RunCheckpoints(directory)
    try:
        arrays, meta = checkpoints.restore(which)
    except UserError:
        raise
    except Exception as err:  # orbax's errors for missing or corrupt files vary; the user needs one sentence
        raise DamagedCheckpointError(
            f"The {which} checkpoint in {directory / which} is damaged ({type(err).__name__}: {err}); "
            + ("evaluate `--checkpoint latest` instead, or " if which == BEST else "")
            + "train the run again with --force.") from err
    finally:
        checkpoints.close()
    if which == LATEST:  # the latest step stores the train state; keep its model part
        arrays = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(("params.", "rest."))}
    return int(meta["epoch"]), {k: np.asarray(v) for k, v in arrays.items()}


def load_run_weights(run_dir: str | Path) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The model config and the best checkpoint's model state of a ttlx run dir.

    Keys are nnx state paths joined with '.' (``layer1.0.conv1.kernel``, ``bn1.mean``, ``fc.kernel``);
    values are numpy arrays in Flax layout (conv kernels HWIO, dense kernels [in, out]).
    """
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        raise WeightsError(f"{run_dir} is not a ttlx run dir (no config.json); pass a run dir written by "
                           "`ttlx train`.")
    model_cfg = ModelConfig.from_dict(json.loads(config.read_text())["model"])
    return model_cfg, load_model_state(run_dir, BEST)[1]


def encode_json(obj: Any) -> Any:
    """A data-iterator state made JSON-safe: bytes become {'__bytes__': base64}, numpy scalars plain."""
    import base64

    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, dict):
        return {str(k): encode_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [encode_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def decode_json(obj: Any) -> Any:
    """The inverse of :func:`encode_json`."""
    import base64

    if isinstance(obj, dict):
        if set(obj) == {"__bytes__"}:
            return base64.b64decode(obj["__bytes__"])
        return {k: decode_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_json(v) for v in obj]
    return obj
