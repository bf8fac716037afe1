"""The ttlx side of the benchmarks: the same models, step and pipeline through ttlx's public functions.

Runs in ttlx's environment, applies ttlx's process settings (``ttlx.runtime.process``) as a ttlx command
does, and prints one ``BENCH_RESULT`` JSON line. Example:
``python benchmarks/ttlx_side.py train_step --model resnet50-ftl --batch-size 16 --threads 2``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402  (stdlib only, shared with run.py and the reference side)


def build_model(name: str, image_size: int, dtype: str, plain: bool = False):
    """(model, architecture) of a benchmark model, randomly initialised; ``plain`` swaps ttlx's 1x1-conv
    dots back to XLA's convolution (to measure what they gain)."""
    from flax import nnx
    from jax import lax

    from ttlx.models import create_model, get_architecture

    spec = protocol.MODELS[name]
    model = create_model(spec["arch"], spec["trunc"], layerwise=spec["layerwise"], head=protocol.HEAD,
                         num_classes=protocol.NUM_CLASSES, pretrained="random", image_size=image_size,
                         dtype=dtype)
    if plain:
        for _, module in nnx.iter_modules(model):
            if isinstance(module, nnx.Conv):
                module.conv_general_dilated = lax.conv_general_dilated
    return model, get_architecture(spec["arch"])


def make_train_step(args):
    """What ``ttlx train`` compiles (Adam, class-weighted loss, whole-mesh jit), on one fixed batch."""
    import numpy as np

    from ttlx.training.freeze import param_labels
    from ttlx.training.optim import make_optimizer
    from ttlx.training.sharding import data_mesh, shard_batch
    from ttlx.training.steps import init_state, make_steps, model_arrays

    model, arch = build_model(args.model, args.image_size, args.dtype, args.plain)
    params = model_arrays(model)[0]
    tx = make_optimizer(param_labels(params, set(), arch.classifier_key), lr=protocol.LEARNING_RATE)
    mesh = data_mesh()
    steps = make_steps(model, set(), tx, np.ones(protocol.NUM_CLASSES, np.float32), False, mesh)
    state = {"train": init_state(model, tx, 0, mesh)}
    rng = np.random.default_rng(0)
    size = args.image_size
    # uint8 images, normalised in the step, as ttlx train's loaders deliver them (ttlx.training.steps.model_input)
    batch = shard_batch({"image": rng.integers(0, 256, (args.batch_size, size, size, 3), dtype=np.uint8),
                         "label": np.arange(args.batch_size, dtype=np.int32) % protocol.NUM_CLASSES,
                         "mask": np.ones(args.batch_size, np.float32)}, mesh)

    def step():
        state["train"], loss = steps.train(state["train"], batch)
        loss.block_until_ready()

    count = sum(int(np.prod(p.shape)) for p in jax_leaves(params))
    return step, steps, state, batch, count


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def device_name() -> str:
    import jax

    return str(jax.devices()[0].device_kind)


def compile_as_ttlx_train_does(args) -> float | None:
    """Where ``ttlx train`` compiles a network's programs in a helper process (``ttlx.runtime.precompile``:
    DenseNet201 on CPU), do the same: this script again with ``--compile-only`` fills the persistent cache
    first, and the timed process loads the programs. Returns the helper's seconds, None where it does not
    apply (a failing helper is an error: the measurement would not be what ``ttlx train`` runs)."""
    import os
    import subprocess

    from ttlx.models import get_architecture
    from ttlx.runtime import precompile

    if args.plain or args.compile_only:
        return None
    if not precompile.applies(get_architecture(protocol.MODELS[args.model]["arch"])):
        return None
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--compile-only"], capture_output=True,
                          text=True, env={**os.environ, "TTLX_COMPILE_HELPER": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"the compile helper failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def measure_train_step(args) -> dict:
    helper_s = compile_as_ttlx_train_does(args)
    step, steps, state, batch, params = make_train_step(args)
    if args.compile_only:
        steps.train.lower(state["train"], batch).compile()
        return {"compiled": True, "device": device_name()}
    from ttlx.runtime import process
    # (ttlx.runtime.process.heap_frozen; RESULTS section 8)
    with process.heap_frozen():
        timing = protocol.time_steps(step, warmup=args.warmup, steps=args.steps,
                                     after_first=process.freeze_heap)
        if backend() != "cpu":  # on CPU the host runs the step itself: nothing to overlap, steps take seconds
            in_flight = in_flight_seconds(steps.train, state, batch, args.steps)
    programs = "compiled in this process" if helper_s is None else "compiled in a helper process, as ttlx train does"
    result = {"img_s": protocol.images_per_second(args.batch_size, timing), "params": params,
              "device": device_name(), "programs": programs, "helper_s": helper_s, **timing}
    if backend() != "cpu":
        result["in_flight_s"] = [in_flight]
    return result


def in_flight_seconds(train, state: dict, batch, steps: int, dispatch: list | None = None) -> float:
    """Seconds per step of ``ttlx train``'s loop (``ttlx.training.loop.train_epoch``): each step is dispatched before
    the previous step's loss is read, so the host's dispatch of one step overlaps the device's work on the
    last. The benchmark's own protocol waits for every step (both sides), which leaves the device idle while
    the host launches; on a GPU the two differ. ``dispatch``, if given, receives the host's seconds inside
    each call."""
    start = time.perf_counter()
    previous = None
    for _ in range(steps):
        before = time.perf_counter()
        state["train"], loss = train(state["train"], batch)
        if dispatch is not None:
            dispatch.append(time.perf_counter() - before)
        if previous is not None:
            float(previous)
        previous = loss
    float(previous)
    return (time.perf_counter() - start) / steps


def backend() -> str:
    import jax

    return jax.default_backend()


def measure_compile(args) -> dict:
    """Trace and compile times of the train step (run twice against one cache dir for the cache's effect)."""
    start = time.perf_counter()
    _, steps, state, batch, _ = make_train_step(args)
    build = time.perf_counter() - start
    start = time.perf_counter()
    lowered = steps.train.lower(state["train"], batch)
    trace = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_time = time.perf_counter() - start
    start = time.perf_counter()
    _, loss = compiled(state["train"], batch)
    loss.block_until_ready()
    return {"build_s": build, "trace_s": trace, "compile_s": compile_time,
            "first_step_s": time.perf_counter() - start, "device": device_name()}


def measure_memory(args) -> dict:
    import jax

    step, _, _, _, params = make_train_step(args)
    for _ in range(args.steps):
        step()
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {"peak_rss_mib": protocol.peak_rss_mib(), "device_peak_mib": peak / 2**20 if peak else None,
            "params": params, "device": device_name()}


def measure_latency(args) -> dict:
    """``ttlx analyze cost``'s latency: median of a jit-compiled batch-1 eval-mode forward pass of the network
    with zero weights, timed where ttlx times it (a fresh process for DenseNet201 on CPU, see
    ``ttlx.cost.latency``); ``--plain`` times the plain-convolution network in this process."""
    from ttlx.cost.latency import latency_ms, measure_latency, times_in_fresh_process
    from ttlx.cost.model_cost import count_params
    from ttlx.models import resolve_config
    from ttlx.models.abstract import abstract_model

    spec = protocol.MODELS[args.model]
    arch, cfg = resolve_config(spec["arch"], spec["trunc"], layerwise=spec["layerwise"], head=protocol.HEAD,
                               num_classes=protocol.NUM_CLASSES, image_size=args.image_size, dtype=args.dtype)
    if args.plain:
        model, _ = build_model(args.model, args.image_size, args.dtype, plain=True)
        latency, timed_in = measure_latency(model, args.image_size, repeats=args.steps, warmup=args.warmup), "this"
    else:
        latency = latency_ms(cfg, repeats=args.steps, warmup=args.warmup)
        timed_in = "a fresh" if times_in_fresh_process(cfg) else "this"
    return {"latency_ms": latency, "params": count_params(abstract_model(arch, cfg))[0], "device": device_name(),
            "timed_in": f"{timed_in} process"}


def measure_pipeline(args) -> dict:
    """ttlx's training loader over the JPEGs of ``--images``.

    By default they are prepared without shrinking them (``max_size=0``; prepare still re-encodes them
    at quality 95) and the stored bytes are written back out as files under ``--workdir``, so the
    reference pipeline decodes exactly the same JPEGs. ``--as-shipped`` prepares them as ``ttlx prepare``
    does by default (shorter side at most 256 px, re-encoded once at prepare time) and exports nothing.
    """
    from ttlx.data.pipeline import make_loader
    from ttlx.data.prepare import prepare_dataset

    name = "data-as-shipped" if args.as_shipped else "data"
    data_dir = Path(args.workdir) / name
    start = time.perf_counter()
    prepare_dataset("folder", data_dir, manual_dir=args.images, max_size=None if args.as_shipped else 0)
    prepare_s = time.perf_counter() - start
    stored = describe_stored_images(data_dir / "folder", Path(args.images))
    if not args.as_shipped:
        export_stored_images(data_dir / "folder", Path(args.workdir) / "stored_jpegs")
        stored["exported_to"] = str(Path(args.workdir) / "stored_jpegs")
    loader = make_loader("folder", data_dir, exp=1, split="train", batch_size=args.batch_size,
                         image_size=args.image_size, train=True, seed=0)
    stream = iter(loader)
    timing = protocol.time_steps(lambda: next(stream), warmup=args.warmup, steps=args.steps)
    result = {"img_s": protocol.images_per_second(args.batch_size, timing, overall=True),
              "workers": loader.num_workers, "images": loader.num_examples, "as_shipped": args.as_shipped,
              "prepare_s": prepare_s, "stored": stored, **timing}
    if not args.as_shipped:
        result["stored_jpegs"] = stored["exported_to"]
    return result


def describe_stored_images(root: Path, sources: Path) -> dict:
    """Sizes of the stored images, and how many are byte for byte the files prepare read (ids are their paths)."""
    import io

    from PIL import Image

    from ttlx.data.records import RecordReader
    from ttlx.data.store import load_prepared

    reader = RecordReader(load_prepared(root.name, root.parent).records_dir)
    shapes: dict[str, int] = {}
    identical = total_bytes = 0
    for position in range(len(reader)):
        data, _, example_id = reader.read(position)
        width, height = Image.open(io.BytesIO(data)).size
        shapes[f"{width}x{height}"] = shapes.get(f"{width}x{height}", 0) + 1
        source = sources / example_id
        identical += source.is_file() and source.read_bytes() == data
        total_bytes += len(data)
    return {"count": len(reader), "sizes": shapes, "identical_to_original": identical,
            "mean_kib": round(total_bytes / max(len(reader), 1) / 1024, 1)}


def export_stored_images(root: Path, out: Path) -> int:
    """Write every stored image of a prepared dataset as ``out/<class>/<n>.jpg``; returns the count."""
    from ttlx.data.records import RecordReader
    from ttlx.data.store import load_prepared

    prepared = load_prepared(root.name, root.parent)
    reader = RecordReader(prepared.records_dir)
    for position in range(len(reader)):
        data, label, _ = reader.read(position)
        folder = out / prepared.classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{position:06d}.jpg").write_bytes(data)
    return len(reader)


MEASUREMENTS = {"train_step": measure_train_step, "memory": measure_memory, "latency": measure_latency,
                "pipeline": measure_pipeline, "compile": measure_compile}


def main() -> None:
    parser = protocol.side_arguments(__doc__.splitlines()[0])
    parser.add_argument("--plain", action="store_true", help="leave out ttlx.runtime.process (to measure it)")
    parser.add_argument("--compile-only", action="store_true",
                        help="train_step: compile the step into the persistent cache and exit (the helper)")
    args = parser.parse_args()
    args.threads = protocol.pin_threads(args.threads)  # before JAX sizes its thread pools
    from ttlx.runtime import process

    settings = {"plain": True} if args.plain else process.configure_process()
    import flax
    import jax

    result = MEASUREMENTS[args.measurement](args)
    result.update(side="ttlx", threads=args.threads, settings=settings, backend=jax.default_backend(),
                  versions={"jax": jax.__version__, "flax": flax.__version__})
    protocol.emit(result)


if __name__ == "__main__":
    main()
