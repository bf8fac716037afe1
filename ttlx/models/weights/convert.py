"""torchvision state dicts <-> Flax NNX weights, and the strict merge of weights into a (truncated) model.

Flax weights are a flat dict keyed by the model's NNX state path joined with '.' (``layer1.0.conv1.kernel``).
Because the networks carry torchvision's module names, the two key spaces differ only in the leaf name and
the layout: conv ``weight`` OIHW <-> ``kernel`` HWIO, linear ``weight`` (out, in) <-> ``kernel`` (in, out),
BatchNorm ``weight`` <-> ``scale``, ``running_mean``/``running_var`` <-> ``mean``/``var``.

The merge is strict in the manner of big_vision's ``merge_params``: every source key is loaded or
dropped for a named reason (the classifier when the head differs, the stages truncation did not build,
the stages the TF baseline rebuilds narrower), every shape is checked, and anything else raises a
:class:`WeightsError` listing what the model lacks and what the weights lack.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ttlx.errors import WeightsError

TO_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                 "var": "running_var"}
TORCH_ONLY_SUFFIXES = ("num_batches_tracked",)  # a BatchNorm counter Flax does not keep
# Old DenseNet files name the parts of a dense layer `norm.1`, `conv.2`; torchvision renames them on load.
LEGACY_DENSE_LAYER = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")
DATA_PARALLEL_PREFIX = "module."  # torch.nn.DataParallel wraps every key of a saved model
SHOWN = 4  # keys listed per side in an error
# Weight dtypes read (and stored as float32); integers, booleans, complex and 8-bit floats are refused: no
# torchvision weight has them, and a cast would turn a wrong file into plausible-looking numbers.
WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_dtype(key: str, dtype: str, origin: str) -> None:
    """Raise one sentence unless ``dtype`` (a numpy name such as ``int32``) is a weight dtype."""
    if dtype not in WEIGHT_DTYPES:
        raise WeightsError(f"{origin} holds {key} as {dtype}, not as floating-point weights; give a state dict "
                           f"of {', '.join(WEIGHT_DTYPES[:-1])} or {WEIGHT_DTYPES[-1]} tensors.")


def as_weight(key: str, value, origin: str) -> np.ndarray:
    """``value`` as float32, refusing a non-float dtype and values that are NaN, infinite or beyond float32."""
    value = np.asarray(value)
    check_dtype(key, value.dtype.name, origin)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        out = np.asarray(value, dtype=np.float32)
    if not np.isfinite(out).all():
        raise WeightsError(f"{origin} holds NaN, infinite or out-of-range values in {key}; the file is damaged, "
                           f"so give an intact copy.")
    return out


def normalise_torch_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Undo the legacy spellings of torchvision keys: DataParallel's ``module.`` and DenseNet's ``norm.1``."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix(DATA_PARALLEL_PREFIX)
        out[LEGACY_DENSE_LAYER.sub(r"\1\2.", key)] = value
    return out


def flax_leaf(torch_leaf: str, ndim: int) -> str:
    if torch_leaf == "weight":
        return "kernel" if ndim >= 2 else "scale"
    return {"running_mean": "mean", "running_var": "var"}.get(torch_leaf, torch_leaf)


def from_torchvision(state_dict: Mapping[str, np.ndarray], origin: str = "The state dict") -> dict[str, np.ndarray]:
    """A torchvision-format state dict as flat Flax weights (float32, HWIO kernels).

    float16, bfloat16 and float64 tensors are converted; any other dtype, and NaN or infinite values, raise
    a :class:`WeightsError` naming ``origin`` and the key.
    """
    out = {}
    for key, value in normalise_torch_keys(state_dict).items():
        if key.endswith(TORCH_ONLY_SUFFIXES):
            continue
        value = as_weight(key, value, origin)
        prefix, _, leaf = key.rpartition(".")
        if leaf == "weight" and value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif leaf == "weight" and value.ndim == 5:  # Conv3d OIDHW -> DHWIO
            value = value.transpose(2, 3, 4, 1, 0)
        elif leaf == "weight" and value.ndim == 2:
            value = value.T
        out[f"{prefix}.{flax_leaf(leaf, value.ndim)}" if prefix else flax_leaf(leaf, value.ndim)] = value
    return out


def replicate_grey_stem(flat: Mapping[str, np.ndarray], shapes: Mapping[str, tuple]) -> tuple[dict, list[str]]:
    """Fit a first convolution's input channels to ``shapes``: 1 -> 3 and 3 -> 1.

    A 1-channel kernel W (chest-X-ray weights) becomes W/3 in each of 3 channels; a 3-channel kernel becomes
    the sum over its channels. Either way, on a grey image (equal channels) every output equals the original
    convolution's, up to float rounding. Returns the weights and the keys so fitted.
    """
    out, fitted = dict(flat), []
    for key, value in flat.items():
        want = shapes.get(key)
        if value.ndim != 4 or want is None or len(want) != 4 or (value.shape[2], want[2]) not in ((1, 3), (3, 1)) \
                or value.shape[:2] + value.shape[3:] != tuple(want[:2]) + tuple(want[3:]):
            continue
        if want[2] == 3:
            out[key] = np.repeat(value / np.float32(3), 3, axis=2).astype(np.float32)
        else:
            out[key] = value.sum(axis=2, keepdims=True, dtype=np.float32)
        fitted.append(key)
    return out, fitted


def to_torchvision(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat Flax weights as a torchvision-format state dict (the inverse of :func:`from_torchvision`)."""
    out = {}
    for key, value in flat.items():
        value = np.asarray(value)
        prefix, _, leaf = key.rpartition(".")
        if leaf == "kernel" and value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif leaf == "kernel" and value.ndim == 5:
            value = value.transpose(4, 3, 0, 1, 2)
        elif leaf == "kernel" and value.ndim == 2:
            value = value.T
        out[f"{prefix}.{TO_TORCH_LEAF.get(leaf, leaf)}"] = np.ascontiguousarray(value)
    return out


def model_variables(model) -> dict:
    """The model's parameters and BatchNorm statistics by flat key (the live Variable objects)."""
    from flax import nnx

    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    return {".".join(str(p) for p in path): var for path, var in nnx.to_flat_state(state)}


def variable_shapes(model) -> dict[str, tuple[int, ...]]:
    return {key: tuple(var.get_value().shape) for key, var in model_variables(model).items()}


def model_flat(model) -> dict[str, np.ndarray]:
    """The model's weights as flat numpy arrays (what a converted cache file or a run dir stores)."""
    return {key: np.asarray(var.get_value()) for key, var in model_variables(model).items()}


@dataclass
class MergePlan:
    """What the merge does with every key; ``problems`` empty means the weights fit."""

    load: dict[str, np.ndarray] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> source keys
    fresh: list[str] = field(default_factory=list)  # model keys left at their random initialisation
    missing: list[str] = field(default_factory=list)  # in the model, not in the weights
    unexpected: list[str] = field(default_factory=list)  # in the weights, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, model, weights

    @property
    def problems(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def drop(self, reason: str, key: str) -> None:
        self.dropped.setdefault(reason, []).append(key)


def plan_merge(model_shapes: Mapping[str, tuple], source: Mapping[str, np.ndarray],
               reference_shapes: Mapping[str, tuple], *, classifier_key: str,
               slimmed: frozenset[str] = frozenset()) -> MergePlan:
    """Decide, key by key, how flat Flax ``source`` weights go into a model with ``model_shapes``.

    ``reference_shapes`` are the keys of the whole (untruncated, unslimmed) backbone: a source key found
    there but not in the model belongs to a stage truncation dropped. ``slimmed`` are model keys that the
    TF baseline rebuilds narrower and keeps random. The classifier loads only when all its shapes match and
    the source backbone is not deeper than the model's.
    """
    plan = MergePlan()
    head = classifier_key + "."
    model_head = {k: s for k, s in model_shapes.items() if k.startswith(head)}
    source_head = {k: tuple(v.shape) for k, v in source.items() if k.startswith(head)}
    # a classifier means something only on the features it was trained on: same shapes, nothing cut off
    cut = any(k in reference_shapes and k not in model_shapes for k in source)
    head_fits = bool(model_head) and model_head == source_head and not cut
    for key, value in source.items():
        if key.startswith(head) and not head_fits:
            plan.drop("classifier", key)
        elif key.startswith(head):
            plan.load[key] = value
        elif key in slimmed:
            plan.drop("slimmed", key)
        elif key in model_shapes:
            if tuple(value.shape) == tuple(model_shapes[key]):
                plan.load[key] = value
            else:
                plan.mismatched.append((key, tuple(model_shapes[key]), tuple(value.shape)))
        elif key in reference_shapes:
            plan.drop("truncated", key)
        else:
            plan.unexpected.append(key)
    wrong_shape = {m[0] for m in plan.mismatched}
    for key in model_shapes:
        if key in plan.load or key in wrong_shape:
            continue
        if key.startswith(head) or key in slimmed:
            plan.fresh.append(key)
        else:
            plan.missing.append(key)
    return plan


def slimmed_keys(model, reference_shapes: Mapping[str, tuple]) -> frozenset[str]:
    """Model keys of the part the TF baseline rebuilt narrower, found by comparing with the full width.

    That part starts at the first unit (in forward order) holding a key whose shape differs from the
    full-width network and runs to the end; a unit that starts narrower can still hold a key of the old
    shape (a DenseNet layer's first norm), which must stay random with the rest of its stage.
    """
    from flax import nnx

    shapes = variable_shapes(model)
    changed = {k for k, s in shapes.items() if k in reference_shapes and tuple(reference_shapes[k]) != s}
    if not changed or not hasattr(model, "units"):
        return frozenset(changed)
    paths = {id(node): ".".join(str(p) for p in path) + "." for path, node in nnx.iter_modules(model)}
    prefixes = [paths[id(fn)] for _, fn in model.units() if id(fn) in paths]
    starts = [i for i, prefix in enumerate(prefixes) if any(k.startswith(prefix) for k in changed)]
    later = tuple(prefixes[starts[0]:]) if starts else ()
    return frozenset(changed | {k for k in shapes if later and k.startswith(later)})


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def mismatch_message(plan: MergePlan, origin: str, target: str, total: int) -> str:
    """One sentence naming what does not fit, both ways, like big_vision's merge_params."""
    if not plan.load and plan.missing:
        return (f"{origin} holds no weights for {target}: none of its {total} keys fits "
                f"(the model expects e.g. {_listed(sorted(plan.missing))}); "
                f"give weights of that architecture.")
    parts = []
    if plan.missing:
        parts.append(f"in the model, not in the weights: {_listed(sorted(plan.missing))}")
    if plan.unexpected:
        parts.append(f"in the weights, not in the model: {_listed(sorted(plan.unexpected))}")
    if plan.mismatched:
        shapes = [f"{k} model {m} vs weights {w}" for k, m, w in sorted(plan.mismatched)]
        parts.append(f"shapes differ: {_listed(shapes)}")
    return f"{origin} does not fit {target}: " + "; ".join(parts) + "."


def apply_plan(model, plan: MergePlan) -> None:
    """Write the planned arrays into the model's variables, in each variable's dtype."""
    import jax.numpy as jnp

    variables = model_variables(model)
    for key, value in plan.load.items():
        var = variables[key]
        var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))


def merge(model, source: Mapping[str, np.ndarray], reference_shapes: Mapping[str, tuple], *,
          classifier_key: str, origin: str, target: str, slimmed: frozenset[str] = frozenset()) -> MergePlan:
    """Strictly load flat Flax ``source`` weights into ``model``; raise :class:`WeightsError` on a misfit."""
    plan = plan_merge(variable_shapes(model), source, reference_shapes, classifier_key=classifier_key,
                      slimmed=slimmed)
    if plan.problems:
        raise WeightsError(mismatch_message(plan, origin, target, len(source)))
    apply_plan(model, plan)
    return plan
