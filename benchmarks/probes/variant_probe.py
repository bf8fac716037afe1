"""Variants of parts of the ResNet50 train step, timed as whole steps in alternating rounds (for TTL-2 over FTL
on a GPU).

TTL-2 runs at 1.22-1.29x FTL's step rate on an H100 against a 1.3 target (RESULTS sections 5 and 6): the
stages TTL-2 keeps are the high-resolution ones, where memory traffic rather than multiply-adds sets the time,
so candidates cut work that every step shares. Each variant swaps functions of ttlx's model code while its
steps are built and compiled. The three candidates of the third H100 loan (one-pass BatchNorm statistics, a
space-to-depth stem, the unrolled pooling gradient) took both steps 12-15% faster, without moving the ratio,
and ttlx now runs them on accelerators (RESULTS section 7.2); the variants are the formulations they
replaced, so the next loan can check the adoption and try new candidates against it:

- ``base``: ttlx as shipped;
- ``two_pass_bn``: BatchNorm's batch statistics as the mean and then E[(x - mean)^2] (a second read of the
  activations), as on CPU, instead of E[x^2] - E[x]^2;
- ``plain_stem``: the 7x7 stride-2 stem convolution as one convolution over 3 channels, instead of
  ``ttlx.models.ops.space_to_depth_stem``;
- ``jax_pool``: the stem max pooling with JAX's gradient rule (an argmax ``reduce_window`` writing four int32
  index arrays, then a scatter), instead of ``ttlx.models.ops.max_pool``'s unrolled one;
- ``before``: the three together, ttlx on accelerators before the adoption.

And variants of XLA's GPU compiler options (:data:`XLA_OPTIONS`), passed as ``compiler_options`` to every
``jax.jit`` made while the variant's steps are built (its own program, in the same process as the others):

- ``no_command_buffers``: every kernel launched on its own, instead of runs of them recorded into CUDA graphs;
- ``command_buffers_min_1``: CUDA graphs of any length, not only of XLA's default minimum;
- ``runtime_fusion``: cuDNN's runtime-compiled fusion of convolutions with the elementwise ops around them.

These change how the host launches the step and which kernels cuDNN gets, never the arithmetic: each round
also records ``dispatch_ms``, the host's median time inside the step's call in the in-flight loop. A variant
whose program fails to build (an option this jaxlib does not know) is recorded as ``failed`` and skipped.

Why rounds: the first loan of this probe timed the variants one after the other, and the same FTL step
drifted from 28.4 to 32 ms within 20 steps (RESULTS section 6), more than any variant's effect. So every
(variant, model) program is built and compiled first; then ``--rounds`` rounds time each of them in turn
(rotating the order), and a variant's TTL-2/FTL ratio is taken within each round, from steps run seconds
apart. Each round times two loops: ``synced``, the benchmark's protocol (wait for every step), and
``in_flight``, ``ttlx train``'s loop (dispatch the next step before reading the last one's loss), where the
host's dispatch overlaps the device's work and the rate is what the device sustains.

One process, so later compiles reuse the first one's autotuning. Every record (built, round, summary) is
printed and appended to ``--out`` as one JSON line as soon as it exists, so a loan cut short keeps what ran.
    python benchmarks/probes/variant_probe.py --out OUT.jsonl [--models resnet50-ttl2 resnet50-ftl] [--variants ...]
        [--rounds 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: protocol, ttlx_side
import protocol  # noqa: E402


def two_pass_moments(x):
    """(mean, biased variance) over batch and space as the mean and then E[(x - mean)^2], in float32."""
    import jax.numpy as jnp

    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=(0, 1, 2))
    return mean, jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))


def jax_pool(x):
    """The stem pooling (3x3, stride 2, padding 1) with JAX's own gradient rule."""
    from flax import nnx

    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def never(*args, **kwargs) -> bool:
    return False


@contextlib.contextmanager
def patched(target, name: str, value):
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def variants() -> dict:
    """Variant name -> a function returning the context in which that variant's steps are built and compiled."""
    from ttlx.models import layers, ops

    swaps = {"two_pass_bn": [(layers, "batch_moments", two_pass_moments)],
             "plain_stem": [(ops, "_is_stem", never)],
             "jax_pool": [(layers, "max_pool_3x3_s2", jax_pool)]}
    swaps["before"] = [swap for name in ("two_pass_bn", "plain_stem", "jax_pool") for swap in swaps[name]]

    def context(pairs):
        stack = contextlib.ExitStack()
        for target, name, value in pairs:
            stack.enter_context(patched(target, name, value))
        return stack

    made = {name: lambda pairs=pairs: context(pairs) for name, pairs in swaps.items()}
    compiled = {name: lambda options=options: compiler_options(options) for name, options in XLA_OPTIONS.items()}
    return {"base": contextlib.nullcontext, **made, **compiled}


# Variant name -> XLA compiler options (GPU ones: XLA:CPU accepts and ignores them, as for any backend).
XLA_OPTIONS = {"no_command_buffers": {"xla_gpu_enable_command_buffer": ""},
               "command_buffers_min_1": {"xla_gpu_graph_min_graph_size": 1},
               "runtime_fusion": {"xla_gpu_use_runtime_fusion": True}}


def compiler_options(options: dict):
    """A context in which every ``jax.jit`` compiles with ``options`` (XLA compiler options; an option the
    call names itself wins)."""
    import functools

    import jax

    return patched(jax, "jit", functools.partial(jax.jit, compiler_options=options))


def time_train_step(model: str, args, context=contextlib.nullcontext) -> dict:
    """The first step's loss and the step times of ``model``'s train step built and run inside ``context()``."""
    built = build(model, args, context)
    timing = protocol.time_steps(built["step"], warmup=2, steps=args.steps)
    return {"first_loss": built["first_loss"], "img_s": protocol.images_per_second(args.batch_size, timing),
            "median_ms": timing["median_s"] * 1e3, "first_s": built["first_s"],
            "step_ms": [t * 1e3 for t in timing["step_s"]]}


def build(model: str, args, context=contextlib.nullcontext) -> dict:
    """``model``'s train step built inside ``context()`` and compiled there by running its first step (the
    compiled program stays with the jitted function, so later calls outside the context run the variant)."""
    import ttlx_side

    with context():
        side = argparse.Namespace(model=model, image_size=args.image_size, dtype=args.dtype, plain=False,
                                  batch_size=args.batch_size)
        step, steps, state, batch, _ = ttlx_side.make_train_step(side)
        start = time.perf_counter()
        state["train"], loss = steps.train(state["train"], batch)
        first_loss, first_s = float(loss), time.perf_counter() - start
    return {"step": step, "steps": steps, "state": state, "batch": batch, "first_loss": first_loss,
            "first_s": first_s}


def time_round(built: dict, args) -> dict:
    """One round of ``built``'s steps: the median of ``args.steps`` synced steps, then as many in flight."""
    import statistics

    import ttlx_side

    timing = protocol.time_steps(built["step"], warmup=2, steps=args.steps)
    dispatch = []
    in_flight = ttlx_side.in_flight_seconds(built["steps"].train, built["state"], built["batch"], args.steps,
                                            dispatch=dispatch)
    return {"synced_img_s": protocol.images_per_second(args.batch_size, timing),
            "in_flight_img_s": args.batch_size / in_flight, "synced_ms": timing["median_s"] * 1e3,
            "in_flight_ms": in_flight * 1e3, "dispatch_ms": statistics.median(dispatch) * 1e3}


def rotated(items: list, shift: int) -> list:
    shift %= max(1, len(items))
    return items[shift:] + items[:shift]


def summarize(rounds: list[dict], variant: str, models: list[str]) -> dict:
    """Per model the median rate over rounds; with two models, the first's rate over the second's taken
    within each round (median, min, max), for both loops."""
    import statistics

    mine = [r for r in rounds if r["variant"] == variant]
    summary = {"variant": variant}
    for model in models:
        for loop in ("synced", "in_flight"):
            rates = [r[f"{loop}_img_s"] for r in mine if r["model"] == model]
            summary[f"{model} {loop}_img_s"] = statistics.median(rates) if rates else None
    if len(models) == 2:
        for loop in ("synced", "in_flight"):
            ratios = []
            for index in sorted({r["round"] for r in mine}):
                rate = {r["model"]: r[f"{loop}_img_s"] for r in mine if r["round"] == index}
                if set(models) <= set(rate):
                    ratios.append(rate[models[0]] / rate[models[1]])
            summary[f"{loop}_ratio"] = statistics.median(ratios) if ratios else None
            summary[f"{loop}_ratio_range"] = [min(ratios), max(ratios)] if ratios else None
    return summary


def probe_arguments(description: str, default_variants: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["resnet50-ttl2", "resnet50-ftl"])
    parser.add_argument("--variants", nargs="+", default=default_variants)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    return parser


def recorder(out: Path):
    """A function that prints a record (with the device and time added) and appends it to ``out``."""
    import jax

    def emit(**record):
        record.update(device=str(jax.devices()[0].device_kind), time=time.time())
        line = json.dumps(record)
        print(line, flush=True)
        with out.open("a") as f:
            f.write(line + "\n")

    return emit


def main() -> None:
    choices = ["base", "two_pass_bn", "plain_stem", "jax_pool", "before"]
    args = probe_arguments(__doc__.splitlines()[0], choices).parse_args()
    from ttlx.runtime import process

    settings = process.configure_process()
    import jax

    emit = recorder(args.out)
    emit(kind="settings", settings=settings, jax=jax.__version__, args={k: str(v) for k, v in vars(args).items()})
    contexts = variants()
    unknown = sorted(set(args.variants) - set(contexts))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(contexts)}")
    built = {}
    for name in args.variants:
        for model in args.models:
            try:
                built[name, model] = build(model, args, contexts[name])
            except Exception as error:  # noqa: BLE001 - one variant's failure must not cost the loan the others
                emit(kind="failed", variant=name, model=model, error=f"{type(error).__name__}: {error}"[:2000])
                continue
            emit(kind="built", variant=name, model=model, first_loss=built[name, model]["first_loss"],
                 first_s=built[name, model]["first_s"])
    variants_built = [name for name in args.variants if all((name, model) in built for model in args.models)]
    built = {key: value for key, value in built.items() if key[0] in variants_built}
    rounds = []
    with process.heap_frozen():  # as ttlx train's epochs run (RESULTS section 8)
        for index in range(args.rounds):
            for name, model in rotated(list(built), index):
                rounds.append({"round": index, "variant": name, "model": model,
                               **time_round(built[name, model], args)})
                emit(kind="round", **rounds[-1])
    summaries = [summarize(rounds, name, args.models) for name in variants_built]
    for summary in summaries:
        emit(kind="summary", **summary)
    print_table(summaries, args.models)


def print_table(summaries: list[dict], models: list[str]) -> None:
    """The summaries as a table on stderr: median rates per model and loop, and the within-round ratios."""
    loops = ("synced", "in_flight")
    header = ["variant"] + [f"{model} {loop}" for model in models for loop in loops]
    if len(models) == 2:
        header += [f"ratio {loop}" for loop in loops]
    rows = []
    for summary in summaries:
        row = [summary["variant"]] + [f"{summary[f'{model} {loop}_img_s']:.0f}" for model in models for loop in loops]
        if len(models) == 2:
            row += [f"{summary[f'{loop}_ratio']:.3f} ({summary[f'{loop}_ratio_range'][0]:.3f}-"
                    f"{summary[f'{loop}_ratio_range'][1]:.3f})" for loop in loops]
        rows.append(row)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)), file=sys.stderr)


if __name__ == "__main__":
    main()
