"""Benchmarks of ttlx side by side with the PyTorch reference recipe; prints a table and writes JSON.

    python benchmarks/run.py [--quick] [--json OUT] [--reference-python PY] [--threads N]

Every measurement runs in fresh processes, ttlx's in this interpreter and the reference's (torch +
torchvision) in ``--reference-python``, on the same cores, model, batch size and image size. Synthetic
data only: it runs offline, on CPU or GPU. ``--quick`` uses tiny sizes (a smoke run, not a result).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import protocol  # noqa: E402
import report  # noqa: E402

MEASUREMENTS = ("train_step", "train_step_warm", "pipeline", "latency", "startup", "compile", "memory")
LATENCY_MODELS = ("resnet50-ftl", "resnet50-ttl1", "resnet50-ttl2", "densenet201-ftl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one model: checks that all runs")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--reference-python", default=sys.executable,
                        help="interpreter with torch and torchvision for the reference side")
    parser.add_argument("--threads", type=int, default=None, help="cores for both sides (default: all)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="auto: bfloat16 on GPU, float32 on CPU (the reference uses autocast)")
    parser.add_argument("--batch-size", type=int, default=None, help="train-step batch (CPU 16, GPU 128)")
    parser.add_argument("--image-size", type=int, default=None, help="default 224 (64 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="timed train steps per model")
    parser.add_argument("--models", nargs="+", default=None, choices=sorted(protocol.MODELS),
                        help="networks for the train-step and latency measurements (default: all)")
    parser.add_argument("--only", nargs="+", default=list(MEASUREMENTS), choices=MEASUREMENTS)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace, backend: str) -> dict:
    """Every size and count of this run, from the options, ``--quick`` and the accelerator."""
    gpu = backend not in ("cpu",)
    quick = args.quick
    return {
        "backend": backend,
        "quick": quick,
        "dtype": args.dtype if args.dtype != "auto" else ("bfloat16" if gpu else "float32"),
        "models": args.models or (["resnet50-ftl"] if quick else list(protocol.MODELS)),
        "batch_size": args.batch_size or (4 if quick else 128 if gpu else 16),
        "image_size": args.image_size or (64 if quick else 224),
        "steps": args.steps or (2 if quick else 20 if gpu else 3),
        "warmup": 1 if quick else 3 if gpu else 2,
        "rounds": 1 if quick or gpu else 2,  # alternating ttlx/reference processes per train-step/latency model
        "pipeline_images": 48 if quick else 512,
        "pipeline_image_shape": (320, 240) if quick else (600, 450),  # HAM10000's size
        "pipeline_batch_size": 8 if quick else 32,
        "pipeline_batches": 6 if quick else 16,
        "pipeline_warmup": 1 if quick else 3,  # batches before timing: both sides past their start-up
        "pipeline_rounds": 1 if quick else 2,  # alternating processes per side and comparison
        "latency_models": ["resnet50-ftl"] if quick else (args.models or list(LATENCY_MODELS)),
        "latency_repeats": 5 if quick else 20,
        "memory_batch_size": 8 if quick else 64,
        "startup_repeats": 3 if quick else 5,
        "threads": args.threads,
    }


@dataclass
class Context:
    """What every measurement needs: the interpreters, the plan and a scratch folder."""

    ttlx_python: str
    reference_python: str
    settings: dict
    workdir: Path

    def command(self, side: str, measurement: str, **options) -> list[str]:
        python, script = ((self.ttlx_python, "ttlx_side.py") if side == "ttlx"
                          else (self.reference_python, "reference_side.py"))
        command = [python, str(HERE / script), measurement, "--dtype", self.settings["dtype"]]
        if self.settings["threads"]:
            command += ["--threads", str(self.settings["threads"])]
        for key, option in options.items():
            flag = "--" + key.replace("_", "-")
            command += [flag] if option is True else [] if option is False else [flag, str(option)]
        print(f"  {side:9s} {' '.join(command[2:])}", file=sys.stderr, flush=True)
        return command

    def environment(self, cache: str | None = None) -> dict:
        """A fresh compilation cache per process unless ``cache`` names a shared one."""
        folder = self.workdir / (cache or f"cache-{time.time_ns()}")
        return {**os.environ, "TTLX_COMPILATION_CACHE": str(folder)}

    def run_side(self, side: str, measurement: str, timeout: float = 1800, cache: str | None = None,
                 **options) -> dict:
        """One side script in a fresh process; its result, or {'error': ...} when it failed."""
        command = self.command(side, measurement, **options)
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=self.environment(cache),
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        try:
            return protocol.parse_result(done.stdout)
        except ValueError as err:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return {"error": f"{err} (exit code {done.returncode}): {tail}"}

    def run_alternating(self, measurement: str, rounds: int, ttlx_cache: str | None = None, **options) -> dict:
        """Both sides, each in a fresh process, one after the other, ``rounds`` times (ttlx, reference,
        ttlx, ...): a load that comes and goes on a shared machine then falls on both. Each side's step
        times are pooled over its rounds. ttlx gets a fresh compilation cache per process unless
        ``ttlx_cache`` names a shared one."""
        pooled: dict = {}
        for _ in range(rounds):
            for side in ("ttlx", "reference"):
                cache = ttlx_cache if side == "ttlx" else None
                result = self.run_side(side, measurement, cache=cache, **options)
                if "error" in result or side not in pooled:
                    pooled.setdefault(side, result)
                    continue
                pooled[side]["step_s"] += result["step_s"]
                pooled[side]["in_flight_s"] = pooled[side].get("in_flight_s", []) + result.get("in_flight_s", [])
        for result in pooled.values():
            if "error" not in result:
                result["median_s"] = statistics.median(result["step_s"])
                result["img_s"] = options["batch_size"] / result["median_s"]
                result["rounds"] = rounds
                if result.get("in_flight_s"):  # ttlx on an accelerator: ttlx train's loop, one value per round
                    result["in_flight_img_s"] = options["batch_size"] / statistics.median(result["in_flight_s"])
        return pooled


def measure_train_steps(ctx: Context) -> dict:
    s = ctx.settings
    common = {"batch_size": s["batch_size"], "image_size": s["image_size"], "steps": s["steps"],
              "warmup": s["warmup"]}
    return {model: ctx.run_alternating("train_step", s["rounds"], model=model, **common) for model in s["models"]}


def measure_train_steps_warm(ctx: Context) -> dict:
    """The train steps again, with ttlx's programs loaded from a persistent cache that an earlier,
    untimed ttlx process filled: what every run after the first of a model gets (sweep repeats, resumed
    runs). Compiling in the training process leaves XLA's and JAX's compile-time garbage in the one
    glibc heap, whose free lists then slow every later malloc (RESULTS section 2.8)."""
    s = ctx.settings
    common = {"batch_size": s["batch_size"], "image_size": s["image_size"], "steps": s["steps"],
              "warmup": s["warmup"]}
    measured = {}
    for model in s["models"]:
        cache = f"cache-warm-{model}"
        warming = ctx.run_side("ttlx", "train_step", cache=cache, model=model, **{**common, "steps": 1, "warmup": 1})
        if "error" in warming:
            measured[model] = {"ttlx": warming}
            continue
        measured[model] = ctx.run_alternating("train_step", s["rounds"], ttlx_cache=cache, model=model, **common)
    return measured


def measure_reference_with_tuned_malloc(ctx: Context) -> dict:
    """The headline step again, the reference now under ttlx's allocator settings too: how much of the
    ratio is the allocator."""
    s = ctx.settings
    pair = ctx.run_alternating("train_step", s["rounds"], model=report.HEADLINE_MODEL, batch_size=s["batch_size"],
                               image_size=s["image_size"], steps=s["steps"], warmup=s["warmup"], tune_malloc=True)
    return report.throughput_entry(pair["ttlx"], pair["reference"], model=report.HEADLINE_MODEL,
                                   reference_malloc_tuned=True)


def pool_pipeline(results: list[dict], batch_size: int) -> dict:
    """One side's pipeline runs as one result: batches and times pooled, images/s over all timed batches."""
    good = [result for result in results if "error" not in result]
    if not good:
        return results[0]
    pooled = {**good[0], "step_s": [t for result in good for t in result["step_s"]], "rounds": len(good),
              "img_s_per_round": [result["img_s"] for result in good]}
    pooled["total_s"] = sum(pooled["step_s"])
    pooled["median_s"] = statistics.median(pooled["step_s"])
    pooled["img_s"] = batch_size * len(pooled["step_s"]) / pooled["total_s"]
    return pooled


def measure_pipeline(ctx: Context) -> dict:
    """Two comparisons on the same synthetic 600x450 JPEGs, in alternating processes, ``pipeline_rounds``
    times: ttlx with the JPEGs stored as they are (``max_size=0``) against the reference decoding those
    very bytes, and ttlx as shipped (``ttlx prepare``'s default: shorter side at most 256 px, re-encoded
    once at prepare time) against the reference decoding the original full-size files."""
    import jpegs

    s = ctx.settings
    source = ctx.workdir / "jpegs"
    description = jpegs.write_jpegs(source, s["pipeline_images"], *s["pipeline_image_shape"])
    s["pipeline_jpegs"] = description
    options = {"batch_size": s["pipeline_batch_size"], "image_size": s["image_size"],
               "steps": s["pipeline_batches"], "warmup": s["pipeline_warmup"]}
    workdir = ctx.workdir / "pipeline"
    runs: dict[str, list[dict]] = {"ttlx": [], "reference": [], "ttlx_as_shipped": [], "reference_as_shipped": []}
    for _ in range(s["pipeline_rounds"]):
        ours = ctx.run_side("ttlx", "pipeline", images=source, workdir=workdir, **options)
        runs["ttlx"].append(ours)
        # the reference decodes the very bytes ttlx stored (same JPEGs, same sizes)
        runs["reference"].append(ctx.run_side("reference", "pipeline", images=ours.get("stored_jpegs", source),
                                              **options))
        runs["ttlx_as_shipped"].append(ctx.run_side("ttlx", "pipeline", images=source, workdir=workdir,
                                                    as_shipped=True, **options))
        runs["reference_as_shipped"].append(ctx.run_side("reference", "pipeline", images=source, **options))
    pooled = {key: pool_pipeline(results, s["pipeline_batch_size"]) for key, results in runs.items()}
    return {"ttlx": pooled["ttlx"], "reference": pooled["reference"],
            "as_shipped": {"ttlx": pooled["ttlx_as_shipped"], "reference": pooled["reference_as_shipped"]}}


def pool_latency(results: list[dict]) -> dict:
    """One side's latency over its rounds: the median of the rounds' medians (each round's value kept in
    ``latency_ms_rounds``); the first error when no round succeeded."""
    good = [result for result in results if "error" not in result]
    if not good:
        return results[0]
    rounds = [result["latency_ms"] for result in good]
    return {**good[0], "latency_ms": statistics.median(rounds), "latency_ms_rounds": rounds}


def measure_latency(ctx: Context) -> dict:
    """Batch-1 latency, sides in alternating processes (ttlx, reference, ttlx, ...) for ``rounds`` rounds:
    one process's batch-1 median moves with the machine's load (the reference's DenseNet201 gave 78 and 121
    ms in two runs of one afternoon on the shared 2-core machine)."""
    s = ctx.settings
    options = {"image_size": s["image_size"], "steps": s["latency_repeats"], "warmup": 3}
    measured = {}
    for model in s["latency_models"]:
        runs: dict[str, list[dict]] = {"ttlx": [], "reference": []}
        for _ in range(s["rounds"]):
            for side, results in runs.items():
                results.append(ctx.run_side(side, "latency", model=model, **options))
        measured[model] = {side: pool_latency(results) for side, results in runs.items()}
    return measured


def wall_time(command: list[str], repeats: int) -> float | None:
    """Median wall time of a command, or None when it fails."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if subprocess.run(command, capture_output=True).returncode != 0:
            return None
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_startup(ctx: Context) -> dict:
    script = Path(ctx.ttlx_python).parent / "ttlx"
    command = [str(script), "--help"] if script.exists() else [ctx.ttlx_python, "-m", "ttlx.cli", "--help"]
    repeats = ctx.settings["startup_repeats"]
    return {"ttlx_help_s": wall_time(command, repeats), "target_s": report.TARGETS["startup_s"],
            "reference_import_s": wall_time([ctx.reference_python, "-c", "import torch, torchvision"], repeats),
            "command": " ".join(command)}


def measure_compile(ctx: Context) -> dict:
    """The ResNet50 FTL step compiled in two fresh processes that share one persistent cache."""
    s = ctx.settings
    options = {"model": report.HEADLINE_MODEL, "batch_size": s["batch_size"], "image_size": s["image_size"]}
    first = ctx.run_side("ttlx", "compile", cache="cache-compile", **options)
    return {"first": first, "second": ctx.run_side("ttlx", "compile", cache="cache-compile", **options)}


def measure_memory(ctx: Context) -> dict:
    s = ctx.settings
    options = {"model": report.HEADLINE_MODEL, "batch_size": s["memory_batch_size"], "image_size": s["image_size"],
               "steps": 1 if s["quick"] else 2}
    return {side: ctx.run_side(side, "memory", **options) for side in ("ttlx", "reference")}


def probe(python: str, code: str) -> str | None:
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def machine() -> dict:
    """CPU model and cores, load and platform: what RESULTS.md records next to each number."""
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "platform": platform.platform(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    backend = probe(sys.executable, "import jax; print(jax.default_backend())") or "cpu"
    settings = plan(args, backend)
    runs = {"train_step": measure_train_steps, "train_step_warm": measure_train_steps_warm,
            "pipeline": measure_pipeline, "latency": measure_latency,
            "startup": measure_startup, "compile": measure_compile, "memory": measure_memory}
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}
    with tempfile.TemporaryDirectory(prefix="ttlx-bench-") as scratch:
        ctx = Context(sys.executable, args.reference_python, settings, Path(scratch))
        measured = {}
        for name in args.only:
            print(f"{name}:", file=sys.stderr, flush=True)
            measured[name] = runs[name](ctx)
        if "train_step" in args.only and not settings["quick"] and backend == "cpu":
            measured["train_step_reference_tuned_malloc"] = measure_reference_with_tuned_malloc(ctx)
    summary = {**info, **report.summarize(measured, settings), "raw": measured}
    summary["machine"]["load_average_after"] = os.getloadavg()
    print(report.format_table(report.table_rows(summary)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


if __name__ == "__main__":
    main()
