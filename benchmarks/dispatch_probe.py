"""Is ``ttlx train``'s loop bound by the host's dispatch or by the device, and what does Python's garbage
collector cost it? (RESULTS section 8)

For each model's train step (what ``ttlx train`` compiles, on one batch already on the device), after the
compile and a warm-up, in rounds, each with the heap ``as_is`` and ``frozen`` (the objects alive after the
compile out of the collector's reach, as ``ttlx train`` runs its epochs: ``ttlx.runtime.process.heap_frozen``):
``dispatch_ms`` (median) and ``dispatch_max_ms``, the host's time inside each jitted call (the call returns
before the device is done); ``in_flight_ms``, the step time of ``ttlx train``'s loop (next step dispatched
before the last loss is read); ``queued_ms``, the step time with ``--steps`` steps queued and one wait at the
end (the device's own rate when the host keeps ahead); and the number of arrays in the train state. First,
per model, a ``state_call`` record: the host's milliseconds per call of a jitted identity over the train
state as ttlx holds it (plain arrays) and with each array in an nnx Variable, as ttlx held it before.
When ``dispatch_ms`` is close to ``in_flight_ms``, the host sets the pace; a ``dispatch_max_ms`` far above
the median is a pause of the host, e.g. a full garbage collection.

    python benchmarks/dispatch_probe.py --out OUT.jsonl [--models resnet50-ftl resnet50-ttl2] [--steps 30]
        [--rounds 3]
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import variant_probe  # noqa: E402


def time_loops(built: dict, steps: int) -> dict:
    """Median host time per jitted call in the in-flight loop, that loop's step time, and the queued rate."""
    train, state, batch = built["steps"].train, built["state"], built["batch"]
    dispatch = []
    start = time.perf_counter()
    previous = None
    for _ in range(steps):
        before = time.perf_counter()
        state["train"], loss = train(state["train"], batch)
        dispatch.append(time.perf_counter() - before)
        if previous is not None:
            float(previous)
        previous = loss
    float(previous)
    in_flight = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps):
        state["train"], loss = train(state["train"], batch)
    float(loss)
    queued = (time.perf_counter() - start) / steps
    return {"dispatch_ms": statistics.median(dispatch) * 1e3, "dispatch_max_ms": max(dispatch) * 1e3,
            "in_flight_ms": in_flight * 1e3, "queued_ms": queued * 1e3}


def state_call_ms(tree, calls: int = 50) -> float:
    """Milliseconds per call of a jitted, donated identity over ``tree`` (once compiled): the host's cost of
    passing the train state in and out of a step."""
    import jax

    identity = jax.jit(lambda t: jax.tree.map(lambda x: x * 1, t), donate_argnums=0)
    tree = jax.block_until_ready(identity(tree))
    start = time.perf_counter()
    for _ in range(calls):
        tree = identity(tree)
    jax.block_until_ready(tree)
    return (time.perf_counter() - start) / calls * 1e3


def state_calls(state: dict) -> dict:
    """:func:`state_call_ms` for the train state as ttlx holds it (plain arrays) and with every array in an
    nnx Variable (as ttlx held it before; RESULTS section 8), each with the heap as is and frozen."""
    import jax
    from flax import nnx

    from ttlx.runtime import process


    copy = jax.tree.map(lambda x: x.copy(), state)  # donated below: the step's own state stays intact
    trees = {"arrays": lambda: copy, "variables": lambda: jax.tree.map(nnx.Variable, copy)}
    result = {"arrays": len(jax.tree.leaves(state))}
    for heap, context in (("as_is", contextlib.nullcontext), ("frozen", process.heap_frozen)):
        for name, make in trees.items():
            with context():
                result[f"{name}_{heap}_ms"] = state_call_ms(make())
            copy = jax.tree.map(lambda x: x.copy(), state)
    return result


def main() -> None:
    parser = variant_probe.probe_arguments(__doc__.splitlines()[0], ["base"])
    parser.set_defaults(models=["resnet50-ftl", "resnet50-ttl2"], steps=30, rounds=3)
    args = parser.parse_args()
    from ttlx.runtime import process

    process.configure_process()
    import jax

    emit = variant_probe.recorder(args.out)
    built = {}
    for model in args.models:
        built[model] = variant_probe.build(model, args)
        arrays = len(jax.tree.leaves(built[model]["state"]["train"]))
        emit(kind="built", model=model, first_s=built[model]["first_s"], state_arrays=arrays)
        emit(kind="state_call", model=model, **state_calls(built[model]["state"]["train"]))
        time_loops(built[model], 3)
    heaps = {"as_is": contextlib.nullcontext, "frozen": process.heap_frozen}
    for index in range(args.rounds):
        for heap in variant_probe.rotated(list(heaps), index):
            with heaps[heap]():
                for model in variant_probe.rotated(list(args.models), index):
                    emit(kind="round", round=index, heap=heap, model=model, **time_loops(built[model], args.steps))


if __name__ == "__main__":
    main()
