"""Stem max pooling's gradient on an accelerator: JAX's generic rule against ``ttlx.models.ops.max_pool``.

A short-loan probe (one process, so later compilations reuse the first one's autotuning): the pooling
alone (forward + gradient at the stem's shape), then whole train steps of the given models with each
pooling variant. Each result is printed and appended to ``--out`` as one JSON line as soon as it exists.
    python benchmarks/pool_probe.py --out OUT.jsonl [--models resnet50-ttl2 resnet50-ftl]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402

POOLS = ("generic", "unrolled", "loop")


def variants():
    from flax import nnx

    from ttlx.runtime.process import max_pool

    return {
        "generic": lambda x: nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),
        "unrolled": lambda x: max_pool(x, 3, 2, 1, True),
        "loop": lambda x: max_pool(x, 3, 2, 1, False),
    }


def pool_alone(pool, batch: int, size: int, dtype: str, steps: int) -> dict:
    import jax
    import jax.numpy as jnp

    x = jax.random.normal(jax.random.key(0), (batch, size, size, 64), dtype)
    g = jax.jit(jax.grad(lambda v: jnp.sum(pool(v).astype(jnp.float32) ** 2)))
    timing = protocol.time_steps(lambda: g(x).block_until_ready(), warmup=3, steps=steps)
    return {"median_ms": timing["median_s"] * 1e3, "first_s": timing["first_s"]}


def main() -> None:
    from variant_probe import patched, probe_arguments, recorder, time_train_step

    args = probe_arguments(__doc__.splitlines()[0], list(POOLS)).parse_args()
    from ttlx.runtime import process

    settings = process.configure_process()
    import jax

    from ttlx.models import layers

    emit = recorder(args.out)
    emit(kind="settings", settings=settings, jax=jax.__version__, args={k: str(v) for k, v in vars(args).items()})
    pools = {name: pool for name, pool in variants().items() if name in args.variants}
    size = args.image_size // 2
    for name, pool in pools.items():
        emit(kind="pool", variant=name, shape=[args.batch_size, size, size, 64],
             **pool_alone(pool, args.batch_size, size, args.dtype, args.steps))
    for model in args.models:
        for name, pool in pools.items():
            context = lambda pool=pool: patched(layers, "max_pool_3x3_s2", pool)  # noqa: E731
            emit(kind="train_step", model=model, variant=name, **time_train_step(model, args, context))


if __name__ == "__main__":
    main()
