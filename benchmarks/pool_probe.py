"""Stem max pooling's gradient on an accelerator: JAX's generic rule against ``ttlx.performance.max_pool``.

A short-loan probe (one process, so later compilations reuse the first one's autotuning): the pooling
alone (forward + gradient at the stem's shape), then whole train steps of the given models with each
pooling variant. Each result is printed and appended to ``--out`` as one JSON line as soon as it exists.
    python benchmarks/pool_probe.py --out OUT.jsonl [--models resnet50-ttl2 resnet50-ftl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402


def variants():
    from flax import nnx

    from ttlx.performance import max_pool

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


def train_step(model: str, pool, args) -> dict:
    import ttlx_side

    from ttlx.models import layers

    original = layers.max_pool_3x3_s2
    layers.max_pool_3x3_s2 = pool
    try:
        side = argparse.Namespace(model=model, image_size=args.image_size, dtype=args.dtype, plain=False,
                                  batch_size=args.batch_size)
        step, *_ = ttlx_side.make_train_step(side)
        timing = protocol.time_steps(step, warmup=3, steps=args.steps)
    finally:
        layers.max_pool_3x3_s2 = original
    return {"img_s": protocol.images_per_second(args.batch_size, timing), "median_ms": timing["median_s"] * 1e3,
            "first_s": timing["first_s"], "step_ms": [t * 1e3 for t in timing["step_s"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["resnet50-ttl2", "resnet50-ftl"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from ttlx import performance

    settings = performance.configure_process()
    import jax

    def emit(**record):
        record.update(device=str(jax.devices()[0].device_kind), time=time.time())
        line = json.dumps(record)
        print(line, flush=True)
        with args.out.open("a") as f:
            f.write(line + "\n")

    emit(kind="settings", settings=settings, jax=jax.__version__, args={k: str(v) for k, v in vars(args).items()})
    pools = variants()
    size = args.image_size // 2
    for name, pool in pools.items():
        emit(kind="pool", variant=name, shape=[args.batch_size, size, size, 64],
             **pool_alone(pool, args.batch_size, size, args.dtype, args.steps))
    for model in args.models:
        for name, pool in pools.items():
            emit(kind="train_step", model=model, variant=name, **train_step(model, pool, args))


if __name__ == "__main__":
    main()
