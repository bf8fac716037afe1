"""Variants of parts of the ResNet50 train step, whole steps timed per variant (for TTL-2 over FTL on a GPU).

TTL-2 runs at 1.28x FTL's step rate on an H100 against a 1.3 target (RESULTS section 5): the stages TTL-2
keeps are the high-resolution ones, where memory traffic rather than multiply-adds sets the time, so the
candidates cut work that every step shares. Each variant swaps one function of ttlx's model code while its
steps are built and run:

- ``base``: ttlx as shipped;
- ``bn_one_pass``: BatchNorm's batch statistics as E[x^2] - E[x]^2 in float32, two sums XLA can take in one
  read of the activations, instead of the mean and then E[(x - mean)^2] (a second read); what Flax's own
  BatchNorm does by default (``use_fast_variance``);
- ``s2d_stem``: the 7x7 stride-2 stem convolution over 3 channels as a 4x4 stride-1 convolution over a
  space-to-depth input of 12 channels (the same sums plus zero taps; for tensor cores XLA pads a bfloat16
  convolution's input channels to a multiple of 8: 3 becomes 8, 12 becomes 16);
- ``both``: the two together.

A short-loan probe: one process, so later compiles reuse the first one's autotuning. Each result (the first
step's loss, to check a variant against ``base``, and the median step) is printed and appended to ``--out``
as one JSON line as soon as it exists.
    python benchmarks/variant_probe.py --out OUT.jsonl [--models resnet50-ttl2 resnet50-ftl] [--variants ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402


def one_pass_moments(x):
    """(mean, biased variance) over batch and space from the sums of x and x^2, in float32."""
    import jax.numpy as jnp

    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=(0, 1, 2))
    return mean, jnp.maximum(jnp.mean(jnp.square(xf), axis=(0, 1, 2)) - jnp.square(mean), 0.0)


def space_to_depth_conv(x, kernel):
    """A 7x7, stride-2, padding-3 convolution (NHWC, HWIO, even height and width) computed as a 4x4 stride-1
    convolution over 2x2 pixel blocks stacked into channels; the kernel is zero-padded to 8x8 to match."""
    import jax.numpy as jnp
    from jax import lax

    n, height, width, channels = x.shape
    padded = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    rows, cols = (height + 6) // 2, (width + 6) // 2
    blocks = padded.reshape(n, rows, 2, cols, 2, channels).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(n, rows, cols, 4 * channels)
    taps = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    taps = taps.reshape(4, 2, 4, 2, channels, -1).transpose(0, 2, 1, 3, 4, 5).reshape(4, 4, 4 * channels, -1)
    return lax.conv_general_dilated(blocks, taps, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def s2d_stem(self, x):
    """``ResNet.stem`` with its convolution through :func:`space_to_depth_conv`."""
    from ttlx.models import layers

    dtype = self.conv1.dtype or x.dtype
    y = space_to_depth_conv(x.astype(dtype), self.conv1.kernel.get_value().astype(dtype))
    return layers.max_pool_3x3_s2(layers.relu(self.bn1(y)))


@contextlib.contextmanager
def patched(target, name: str, value):
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def variants() -> dict:
    """Variant name -> a function returning the context in which that variant's steps are built and run."""
    from ttlx.models import layers
    from ttlx.models.resnet import ResNet

    def both():
        stack = contextlib.ExitStack()
        stack.enter_context(patched(layers, "batch_moments", one_pass_moments))
        stack.enter_context(patched(ResNet, "stem", s2d_stem))
        return stack

    return {
        "base": contextlib.nullcontext,
        "bn_one_pass": lambda: patched(layers, "batch_moments", one_pass_moments),
        "s2d_stem": lambda: patched(ResNet, "stem", s2d_stem),
        "both": both,
    }


def time_train_step(model: str, args, context=contextlib.nullcontext) -> dict:
    """The first step's loss and the step times of ``model``'s train step built and run inside ``context()``."""
    import ttlx_side

    with context():
        side = argparse.Namespace(model=model, image_size=args.image_size, dtype=args.dtype, plain=False,
                                  batch_size=args.batch_size)
        step, steps, state, batch, _ = ttlx_side.make_train_step(side)
        start = time.perf_counter()
        state["train"], loss = steps.train(state["train"], batch)
        first_loss, first_s = float(loss), time.perf_counter() - start
        timing = protocol.time_steps(step, warmup=2, steps=args.steps)
    return {"first_loss": first_loss, "img_s": protocol.images_per_second(args.batch_size, timing),
            "median_ms": timing["median_s"] * 1e3, "first_s": first_s,
            "step_ms": [t * 1e3 for t in timing["step_s"]]}


def probe_arguments(description: str, default_variants: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["resnet50-ttl2", "resnet50-ftl"])
    parser.add_argument("--variants", nargs="+", default=default_variants)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=20)
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
    choices = ["base", "bn_one_pass", "s2d_stem", "both"]
    args = probe_arguments(__doc__.splitlines()[0], choices).parse_args()
    from ttlx import performance

    settings = performance.configure_process()
    import jax

    emit = recorder(args.out)
    emit(kind="settings", settings=settings, jax=jax.__version__, args={k: str(v) for k, v in vars(args).items()})
    contexts = variants()
    unknown = sorted(set(args.variants) - set(contexts))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(contexts)}")
    for name in args.variants:  # variant by variant, so that a loan cut short still leaves whole TTL-2/FTL pairs
        for model in args.models:
            emit(kind="train_step", model=model, variant=name, **time_train_step(model, args, contexts[name]))


if __name__ == "__main__":
    main()
