"""Multiply-accumulates of a forward pass, counted from the model's own conv and dense operations.

One eval-mode forward pass is traced (``jax.make_jaxpr``; nothing is computed) and every
``conv_general_dilated`` and ``dot_general`` counts its output elements x the products summed into each.
That is the "conv+linear" convention of torchvision and fvcore. The "ptflops" convention, which the
paper's table uses, adds one per output element of every bias add and the per-element counts that
``ttlx.models.layers`` records while tracing (BatchNorm x2, ReLU, pooling over their inputs).
``compiled.cost_analysis()`` is not used: it skips padding taps and counts XLA's fused elementwise ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
from flax import nnx

from ttlx.models import layers

_PRODUCTS = ("conv_general_dilated", "dot_general")


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of one forward pass, split the way the two conventions need."""

    conv: int = 0
    dense: int = 0
    bias: int = 0
    elementwise: int = 0

    def __add__(self, other: MacCount) -> MacCount:
        return MacCount(self.conv + other.conv, self.dense + other.dense, self.bias + other.bias,
                        self.elementwise + other.elementwise)

    def __mul__(self, times: int) -> MacCount:
        return MacCount(self.conv * times, self.dense * times, self.bias * times, self.elementwise * times)

    @property
    def conv_linear(self) -> int:
        return self.conv + self.dense

    @property
    def ptflops(self) -> int:
        return self.conv + self.dense + self.bias + self.elementwise


def _product_macs(eqn) -> int:
    """MACs of one conv or dot: output elements x the terms summed into each."""
    out = eqn.outvars[0].aval.shape
    if eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return math.prod(out) * math.prod(lhs[d] for d in lhs_contract)
    rhs = eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    # the kernel's in-feature dim is already divided by feature_group_count
    return math.prod(out) * math.prod(rhs) // out_features


def _size(var) -> int:
    return math.prod(getattr(var.aval, "shape", ()))


def _is_var(var) -> bool:
    return isinstance(var, jax_core.Var)  # literals are neither hashable nor data


def _is_bias_add(eqn, products: set, data: set) -> bool:
    """An add of a conv/dot output and a value computed from parameters alone (a bias, not a shortcut)."""
    if eqn.primitive.name != "add" or len(eqn.invars) != 2:
        return False
    a, b = eqn.invars

    def product_plus_constant(p, c) -> bool:
        return _is_var(p) and p in products and not (_is_var(c) and c in data)

    return product_plus_constant(a, b) or product_plus_constant(b, a)


def _nested_macs(eqn, flags: list[bool]) -> MacCount:
    """MACs of the jaxprs nested in an equation (jit, custom_jvp, scan bodies, cond branches)."""
    counts = []
    for inner in jax_core.jaxprs_in_params(eqn.params):
        # calls pass their operands through; cond drops its branch index first
        n = len(inner.invars)
        counts.append(count_jaxpr_macs(inner, flags[-n:] if 0 < n <= len(flags) else None))
    if not counts:
        return MacCount()
    if eqn.primitive.name == "cond":  # one branch runs: count the dearest
        return max(counts, key=lambda c: c.ptflops)
    times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    return sum(counts, MacCount()) * times


def count_jaxpr_macs(jaxpr: jax_core.Jaxpr, data_inputs: Sequence[bool] | None = None) -> MacCount:
    """Conv, dense and bias-add MACs of a jaxpr, nested jaxprs included.

    ``data_inputs`` flags the inputs that carry the image (default: all of them). An add of a conv/dot
    output and a value computed from the other inputs (parameters) alone counts as a bias add.
    """
    flags = [True] * len(jaxpr.invars) if data_inputs is None else list(data_inputs)
    data = {var for var, flag in zip(jaxpr.invars, flags, strict=True) if flag}
    total, products = MacCount(), set()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _PRODUCTS:
            macs = _product_macs(eqn)
            total += MacCount(conv=macs) if name == "conv_general_dilated" else MacCount(dense=macs)
            products.add(eqn.outvars[0])
        elif _is_bias_add(eqn, products, data):
            total += MacCount(bias=_size(eqn.outvars[0]))
        eqn_flags = [_is_var(v) and v in data for v in eqn.invars]
        total += _nested_macs(eqn, eqn_flags)
        if any(eqn_flags):
            data.update(eqn.outvars)
    return total


def forward_jaxpr(model: nnx.Module, image_size: int,
                  batch: int = 1) -> tuple[jax_core.ClosedJaxpr, list[int]]:
    """Trace an eval-mode forward pass of a copy of ``model``; return its jaxpr (the image is the last
    input) and the per-element counts ``layers`` recorded."""
    graphdef, state = nnx.split(model)

    def forward(state, x):
        net = nnx.merge(graphdef, state)
        net.eval()
        return net(x)

    from ttlx.models.abstract import input_shape
    from ttlx.models.ops import xla_convolutions  # 1x1 convs count as convs, not as dense layers

    x = jax.ShapeDtypeStruct(input_shape(model, image_size, batch), jnp.float32)
    with layers.count_elementwise() as elementwise, xla_convolutions():
        closed = jax.make_jaxpr(forward)(state, x)
    return closed, elementwise


def count_macs(model: nnx.Module, image_size: int) -> tuple[MacCount, tuple[int, ...]]:
    """MACs of one batch-1 forward pass and the shape of its output."""
    closed, elementwise = forward_jaxpr(model, image_size)
    image_only = [False] * (len(closed.jaxpr.invars) - 1) + [True]
    macs = count_jaxpr_macs(closed.jaxpr, image_only) + MacCount(elementwise=sum(elementwise))
    return macs, tuple(closed.out_avals[0].shape)
