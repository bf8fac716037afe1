"""A DenseNet dense block alone, forward + backward in training mode, ttlx against torch (CPU).

One process per side, pinned to the given cores; reports the median process CPU time (1 thread) or wall
time per step. Example (ttlx venv, then the reference interpreter):
``python benchmarks/densenet_proxy.py --layers 12 --cin 128 --size 28 --batch 16``
``/work/torchenv/bin/python benchmarks/densenet_proxy.py --torch --layers 12 --cin 128 --size 28 --batch 16``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--variant", default="block", choices=("block", "layers"))
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--cin", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trace", default=None, help="jax.profiler trace directory (ttlx side)")
    return parser.parse_args()


def clock(threads):
    return time.process_time() if threads == 1 else time.perf_counter()


def run_torch(args):
    import torch
    from torchvision.models.densenet import _DenseBlock

    torch.set_num_threads(args.threads)
    block = _DenseBlock(args.layers, args.cin, bn_size=4, growth_rate=32, drop_rate=0.0)
    block.train()
    x = torch.randn(args.batch, args.cin, args.size, args.size)
    w = torch.randn(args.batch, args.cin + 32 * args.layers, args.size, args.size)
    times = []
    for i in range(args.steps + 2):
        start = clock(args.threads)
        block.zero_grad(set_to_none=True)
        (block(x) * w).sum().backward()
        if i >= 2:
            times.append(clock(args.threads) - start)
    return times


def run_ttlx(args):
    from ttlx.runtime.process import configure_process

    configure_process()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from ttlx.models.densenet import DenseBlock

    block = DenseBlock(args.cin, args.layers, 32, dtype=jnp.float32, rngs=nnx.Rngs(0))
    block.train()
    graph, params, rest = nnx.split(block, nnx.Param, ...)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((args.batch, args.size, args.size, args.cin), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((args.batch, args.size, args.size, args.cin + 32 * args.layers),
                                        dtype=np.float32))

    def loss(params, rest):
        net = nnx.merge(graph, params, rest, copy=True)
        if args.variant == "block":
            out = net(x)[0]
        else:
            out = x
            for layer in net.layer_list():
                out = layer(out)
        return jnp.sum(out * w), nnx.split(net, nnx.Param, ...)[2]

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    start = time.perf_counter()
    jax.block_until_ready(step(params, rest))
    compile_s = time.perf_counter() - start
    times = []
    for i in range(args.steps + 1):
        if args.trace and i == args.steps:
            jax.profiler.start_trace(args.trace)
        start = clock(args.threads)
        jax.block_until_ready(step(params, rest))
        if args.trace and i == args.steps:
            jax.profiler.stop_trace()
        elif i >= 1:
            times.append(clock(args.threads) - start)
    return times, compile_s


def main():
    args = parse_args()
    os.sched_setaffinity(0, set(range(args.threads)))
    if args.torch:
        times, compile_s = run_torch(args), None
    else:
        times, compile_s = run_ttlx(args)
    print(json.dumps({"side": "torch" if args.torch else f"ttlx-{args.variant}", "median_s": statistics.median(times),
                      "min_s": min(times), "compile_s": compile_s, "layers": args.layers, "cin": args.cin,
                      "size": args.size, "batch": args.batch, "threads": args.threads}))


if __name__ == "__main__":
    main()
