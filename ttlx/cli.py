"""The ``ttlx`` command: parse options, build a config, call the library.

Nothing heavy is imported at module level (no JAX, no plugins) so ``ttlx --help`` stays instant; each
command imports what it needs inside its body. Errors a user can cause (``ttlx.errors.UserError`` and
unknown registry names) exit with code 2 and one sentence.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

# click's UsageError (wrong option types, unknown options, missing arguments); typer re-exports only its
# BadParameter subclass, under click or its own vendored copy
UsageError = typer.BadParameter.__mro__[1]


def usage_sentence(err) -> str:
    """A usage error as one line ending like a sentence: ``Invalid value for '--lr': ... number.``"""
    text = " ".join(err.format_message().split())
    return text if text.endswith((".", "?", "!")) else text + "."


class OneSentenceErrors(TyperGroup):
    """Usage errors print one sentence and exit with code 2, like every other error a user can cause,
    instead of click's usage block (a command's ``--help`` shows the usage)."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":
                raise
            fail(usage_sentence(err))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as err:  # raised while a subcommand parses its options
            if type(err).__name__ == "NoArgsIsHelpError":
                raise
            fail(usage_sentence(err))


app = typer.Typer(
    cls=OneSentenceErrors,
    help="Truncated transfer learning for medical image classification, in JAX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(help="Fetch and convert pretrained torchvision weights.", no_args_is_help=True)
analyze_app = typer.Typer(help="Measure a model: cost, SVCCA, Grad-CAM.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(analyze_app, name="analyze")


def fail(message: str) -> None:
    """Print one sentence to stderr and exit with code 2."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def user_errors(fn):
    """Turn the errors a user can cause into one sentence and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ttlx.errors import UserError
        from ttlx.registry import UnknownNameError

        try:
            return fn(*args, **kwargs)
        except (UserError, UnknownNameError) as err:
            fail(str(err))
        except FileNotFoundError as err:
            fail(f"{err.strerror or 'not found'}: {err.filename}; check the path.")

    return wrapper


def compiling_command() -> None:
    """Process settings for a command that compiles: compilation cache, allocator, XLA:CPU flags.

    Runs before JAX starts its backends (see ``ttlx.performance``); none of it changes results.
    """
    from ttlx.performance import configure_process

    configure_process()


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


HeadOption = Annotated[str, typer.Option(help="Head: pool, flatten or none (feature map).")]


# ---------------------------------------------------------------------------------------------------
# models and plugins
# ---------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def models(
    image_size: Annotated[int, typer.Option(help="Input size used for output shapes.")] = 224,
    layerwise: Annotated[bool, typer.Option(help="List every layer-wise point too.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """List registered architectures, their truncation points, output shapes and parameter counts."""
    from ttlx.models.catalog import model_table
    from ttlx.report import print_rows

    rows = model_table(image_size=image_size, layerwise=layerwise)
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title=f"Architectures and truncation points at {image_size} px (backbone only)")


@app.command()
@user_errors
def plugins(json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False):
    """List every registered dataset and model and the package that provides it."""
    from ttlx.plugins_table import plugin_rows
    from ttlx.report import print_rows

    rows = plugin_rows()
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title="Registered plugins")


# ---------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset name (see `ttlx plugins`), e.g. digits, HAM10000.")],
    manual_dir: Annotated[Path | None, typer.Option(help="Folder holding the downloaded files.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where prepared datasets live (default: $TTLX_DATA_DIR or ./data).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random splits (recorded).")] = 0,
    splits_from: Annotated[
        Path | None, typer.Option(help="Import split files laid out as <exp>/{train,val,test}.csv.")
    ] = None,
    max_size: Annotated[
        int | None, typer.Option(help="Shorter side of stored images at most this (px); 0 keeps them.")
    ] = None,
    on_bad_image: Annotated[str, typer.Option(help="stop (list them all) or skip (record them).")] = "stop",
    force: Annotated[bool, typer.Option(help="Rebuild even if already prepared.")] = False,
    csv: Annotated[Path | None, typer.Option(help="csv/bimcv: the CSV of image paths and labels.")] = None,
    classes: Annotated[str | None, typer.Option(help="csv/folder: the class list, comma-separated.")] = None,
    uncertain: Annotated[str | None, typer.Option(help="chexpert: uncertain as ones, zeros, ignore.")] = None,
    frontal_only: Annotated[bool | None, typer.Option(help="chexpert: keep frontal views only.")] = None,
    count: Annotated[int | None, typer.Option(help="synthetic: number of images.")] = None,
    size: Annotated[int | None, typer.Option(help="synthetic: image side in pixels.")] = None,
):
    """Build a dataset once (ArrayRecord + split files) and print its images per class and split."""
    from ttlx.config import check_int, check_seed

    check_seed(seed)
    if max_size is not None:
        check_int(max_size, "--max-size", 0, what="0 (keep the images' size) or a number of pixels")
    from ttlx.data.prepare import prepare_dataset
    from ttlx.data.summary import print_summary

    given = {"csv": csv, "classes": classes, "uncertain": uncertain, "frontal_only": frontal_only}
    given.update(count=count, size=size)
    root = prepare_dataset(
        dataset, data_dir, manual_dir, seed=seed, splits_from=splits_from, max_size=max_size,
        on_bad_image=on_bad_image, force=force, show_progress=True,
        **{k: v for k, v in given.items() if v is not None},
    )  # fmt: skip
    print_summary(root)


# ---------------------------------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------------------------------
@app.command()
@user_errors
def train(
    dataset: Annotated[str, typer.Option(help="Dataset name (see `ttlx plugins`).")] = "digits",
    model: Annotated[str, typer.Option(help="resnet50, densenet201, layerttl_resnet50...")] = "resnet50",
    trunc: Annotated[
        int, typer.Option(help="-1: whole backbone (FTL); 1..3 block-wise; units with --layerwise.")
    ] = -1,
    layerwise: Annotated[bool, typer.Option(help="--trunc counts units (bottlenecks...).")] = False,
    pretrained: Annotated[
        str, typer.Option(help="imagenet, imagenet-v2, random, a weights file or a ttlx run dir.")
    ] = "imagenet",
    head: Annotated[str, typer.Option(help="flatten (the reference code's default) or pool.")] = (
        "flatten"),
    pooling: Annotated[bool, typer.Option("--pooling", help="Same as --head pool.")] = False,
    image_size: Annotated[int, typer.Option(help="Input size in pixels.")] = 224,
    exp: Annotated[int, typer.Option(help="Which random split (repeat) to train on.")] = 1,
    sub: Annotated[int, typer.Option(help="Percent of the training and validation split to use.")] = 100,
    bs: Annotated[int, typer.Option("--bs", "--batch-size", help="Global batch size over all devices.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay, as torch Adam applies it.")] = 0.0,
    max_epoch: Annotated[int, typer.Option("--max-epoch", "--max_epoch", help="Most epochs to train.")] = 200,
    patience: Annotated[int, typer.Option(help="ReduceLROnPlateau patience (epochs).")] = 5,
    factor: Annotated[float, typer.Option(help="ReduceLROnPlateau factor.")] = 0.5,
    min_lr: Annotated[float, typer.Option(help="Stop once the learning rate falls below this.")] = 1e-6,
    class_weights: Annotated[
        bool, typer.Option("--class-weights/--no-class-weights", help="Weight the loss by class frequency.")
    ] = True,
    freeze_until: Annotated[
        int | None, typer.Option(help="LWFT: freeze the stem and the first K blocks (units if --layerwise).")
    ] = None,
    ptl_decay: Annotated[
        float, typer.Option("--ptl-decay", "--ptl_decay", help="Divide the backbone learning rate by this.")
    ] = 1.0,
    slim_from: Annotated[
        int | None, typer.Option("--slim-from", "--slim_from", help="TF: rebuild stages from S, slimmer.")
    ] = None,
    slim_factor: Annotated[int, typer.Option("--slim-factor", "--slim_factor", help="TF: width divisor")] = 2,
    dtype: Annotated[str, typer.Option(help="Compute dtype: float32 or bfloat16 (weights stay float32).")] = (
        "float32"),
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and the data order.")] = 0,
    num_workers: Annotated[
        int, typer.Option("--num-workers", "--num_workers", help="Data loading worker processes.")
    ] = 0,
    data_parallel: Annotated[
        bool, typer.Option("--data_parallel", "--data-parallel", help="Accepted; all devices are used.")
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data dir ($TTLX_DATA_DIR, ./data).")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Run dir (default: runs/<dataset>/<name>)")] = None,
    force: Annotated[bool, typer.Option(help="Start over even if the run dir holds a run.")] = False,
    test: Annotated[
        bool, typer.Option("--test", help="Evaluate the test split afterwards (a finished run: only that).")
    ] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the --test intervals.")] = 1000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    multihost: Annotated[bool, typer.Option(help="Call jax.distributed.initialize() first.")] = False,
    coordinator: Annotated[str | None, typer.Option(help="--multihost outside SLURM/MPI: HOST:PORT.")] = None,
    num_processes: Annotated[int | None, typer.Option(help="--multihost outside SLURM/MPI.")] = None,
    process_id: Annotated[int | None, typer.Option(help="--multihost outside SLURM/MPI.")] = None,
):
    """Train (or resume) a run with the paper's recipe; re-running the same command resumes it."""
    from ttlx.config import TrainConfig, check_bootstrap

    # every option is checked before the process is set up, JAX starts or anything is written
    check_bootstrap(bootstrap)
    cfg = TrainConfig(
        dataset=dataset, model=model, trunc=trunc, layerwise=layerwise, pretrained=pretrained,
        head="pool" if pooling else head, image_size=image_size, slim_from=slim_from, slim_factor=slim_factor,
        dtype=dtype, exp=exp, sub=sub, batch_size=bs, lr=lr, weight_decay=weight_decay, max_epoch=max_epoch,
        plateau_factor=factor, plateau_patience=patience, min_lr=min_lr, class_weighted=class_weights,
        freeze_until=freeze_until, ptl_decay=ptl_decay, seed=seed, num_workers=num_workers,
        data_dir=str(data_dir) if data_dir else None, workdir=str(workdir) if workdir else None,
    )  # fmt: skip
    compiling_command()
    if multihost:
        import jax

        jax.distributed.initialize(coordinator, num_processes, process_id)
    from ttlx import train as training
    from ttlx.run_dir import RunDir

    run_dir = training.resolve_run_dir(cfg)
    if not (test and RunDir(run_dir).finished() and not force):
        run_dir = training.train(cfg, force=force, progress=progress)
    if test:
        from ttlx.config import EvalConfig

        _evaluate(EvalConfig(run_dir=str(run_dir), bootstrap=bootstrap), False)


@app.command(name="eval")
@user_errors
def eval_run(
    run_dir: Annotated[Path, typer.Argument(help="A run dir written by `ttlx train`.")],
    split: Annotated[str, typer.Option(help="test, val or train.")] = "test",
    checkpoint: Annotated[str, typer.Option(help="best (lowest validation loss) or latest.")] = "best",
    bootstrap: Annotated[int, typer.Option(help="Resamples for the 95% intervals; 0: none.")] = 1000,
    data_dir: Annotated[Path | None, typer.Option(help="Prepared data (default: the run's).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON, not tables.")] = False,
):
    """Evaluate a run dir: accuracy, AUROC, AUPRC with bootstrap intervals, confusion matrix and cost."""
    from ttlx.config import EvalConfig

    cfg = EvalConfig(run_dir=str(run_dir), split=split, checkpoint=checkpoint, bootstrap=bootstrap,
                     data_dir=str(data_dir) if data_dir else None)  # checks the options first
    compiling_command()
    _evaluate(cfg, json_out)


def _evaluate(cfg, json_out: bool) -> None:
    from ttlx.evaluate import evaluate_run

    result = evaluate_run(cfg, show=not json_out)
    if json_out:
        print_json(result)


# ---------------------------------------------------------------------------------------------------
# analyze cost
# ---------------------------------------------------------------------------------------------------
@analyze_app.command("cost")
@user_errors
def analyze_cost(
    model: Annotated[str, typer.Option(help="resnet50, densenet201, layerttl_resnet50 or a plugin model.")]
    = "resnet50",
    trunc: Annotated[int, typer.Option(help="Truncation point: -1 (full backbone), 1..3 block-wise, or units "
                                            "kept with --layerwise.")] = -1,
    layerwise: Annotated[bool, typer.Option(help="--trunc counts units (bottlenecks, dense layers).")]
    = False,
    head: Annotated[str, typer.Option(help="pool, flatten or none (feature map only).")] = "pool",
    classes: Annotated[int, typer.Option(help="Classes of the head.")] = 2,
    image_size: Annotated[int, typer.Option("--image-size", help="Input size in pixels.")] = 224,
    slim_from: Annotated[int | None, typer.Option("--slim-from", "--slim_from",
                                                  help="TF: stages from this one at reduced width.")] = None,
    slim_factor: Annotated[int, typer.Option("--slim-factor", "--slim_factor", help="TF width divisor.")] = 2,
    repeats: Annotated[int, typer.Option(help="Timed forward passes for the latency median (0: skip).")]
    = 20,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
    = False,
):
    """Parameters, GMACs (conv+linear and ptflops-style) and batch-1 latency of a (truncated) model."""
    compiling_command()
    from ttlx.errors import ConfigError
    from ttlx.models import resolve_config
    from ttlx.models.cost import model_cost, summary_rows
    from ttlx.report import print_rows

    if repeats < 0:
        raise ConfigError(f"--repeats must be 0 (no timing) or more, got {repeats}.")
    _, cfg = resolve_config(model, trunc, layerwise=layerwise, head=head, num_classes=classes,
                            image_size=image_size, slim_from=slim_from, slim_factor=slim_factor)
    cost = model_cost(cfg, repeats=repeats)
    if json_out:
        print_json(cost)
    else:
        print_rows(summary_rows(cost), title="Model cost (batch 1)")


# ---------------------------------------------------------------------------------------------------
# analyze svcca / gradcam
# ---------------------------------------------------------------------------------------------------
RunDirArgument = Annotated[Path, typer.Argument(help="A run dir written by `ttlx train`.")]
CheckpointOption = Annotated[str, typer.Option(help="best (lowest validation loss) or latest.")]
AnalysisDataDir = Annotated[Path | None, typer.Option(help="Prepared data (default: the run's).")]


@analyze_app.command("svcca")
@user_errors
def analyze_svcca(
    run_dir: RunDirArgument,
    split: Annotated[str, typer.Option(help="Images from test, val or train.")] = "test",
    n: Annotated[int, typer.Option("--n", help="Images in the sample.")] = 256,
    positions: Annotated[int, typer.Option(help="Random positions per image of each conv map.")] = 16,
    keep: Annotated[float, typer.Option(help="Share of variance the SVD step keeps.")] = 0.99,
    batch_size: Annotated[int, typer.Option("--bs", "--batch-size", help="Images per forward pass.")] = 32,
    checkpoint: CheckpointOption = "best",
    out: Annotated[Path | None, typer.Option(help="Output dir (default RUN_DIR/analysis/svcca).")] = None,
    data_dir: AnalysisDataDir = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the coefficients as JSON.")] = False,
):
    """SVCCA between the fine-tuned run and the network it started from, at every kept layer."""
    compiling_command()
    from ttlx.analysis.runs import svcca_of_run
    from ttlx.errors import ConfigError
    from ttlx.report import print_rows

    if not 0 < keep <= 1:
        raise ConfigError(f"--keep is a share of variance in (0, 1], got {keep}.")
    results, out_dir = svcca_of_run(run_dir, split=split, images=n, positions=positions, keep=keep,
                                    batch_size=batch_size, out=out, data_dir=data_dir, checkpoint=checkpoint)
    if json_out:
        print_json(results)
        return
    rows = [{"layer": name, "svcca": r["mean"], "chance": r["chance"], "dims": f"{r['dims'][0]}/{r['dims'][1]}",
             "points": r["rows"]} for name, r in results.items()]
    print_rows(rows, title="SVCCA, fine-tuned vs start (1 = same representation up to a linear map)")
    typer.echo(f"Wrote {out_dir / 'svcca.json'} and {out_dir / 'svcca.png'}")


@analyze_app.command("gradcam")
@user_errors
def analyze_gradcam(
    run_dir: RunDirArgument,
    images: Annotated[list[Path] | None, typer.Argument(help="Image files (default: images of --split).")]
    = None,
    split: Annotated[str, typer.Option(help="Images from test, val or train.")] = "test",
    n: Annotated[int, typer.Option("--n", help="Images of the split to explain.")] = 8,
    layer: Annotated[str | None, typer.Option(help="Unit to explain (default: the last kept one).")] = None,
    checkpoint: CheckpointOption = "best",
    out: Annotated[Path | None, typer.Option(help="Output dir (default RUN_DIR/analysis/gradcam_SPLIT).")]
    = None,
    data_dir: AnalysisDataDir = None,
):
    """Grad-CAM heat maps of the predicted class at the last kept stage, one overlay PNG per image."""
    compiling_command()
    from ttlx.analysis.runs import gradcam_of_run

    written = gradcam_of_run(run_dir, split=split, count=n, paths=images or (), layer=layer, out=out,
                             data_dir=data_dir, checkpoint=checkpoint)
    typer.echo(f"Wrote {len(written)} overlay PNG(s) and gradcam.json to {written[0].parent}")


# ---------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------
ArchArgument = Annotated[str, typer.Argument(help="Architecture: resnet50, densenet201 or a plugin model.")]


@weights_app.command("fetch")
@user_errors
def weights_fetch(
    arch: ArchArgument,
    source: Annotated[str, typer.Option(help="imagenet (torchvision V1, the paper's) or imagenet-v2.")]
    = "imagenet",
    force: Annotated[bool, typer.Option(help="Download and convert again even when cached.")] = False,
):
    """Download torchvision ImageNet weights (hub copy, SHA-256 verified) and cache them converted."""
    from ttlx.models import get_architecture
    from ttlx.models.pretrained import fetch

    path = fetch(get_architecture(arch), source, force=force)
    typer.echo(f"{arch} {source} weights ready in {path}; use them with --pretrained {source}.")


@weights_app.command("convert")
@user_errors
def weights_convert(
    arch: ArchArgument,
    file: Annotated[Path, typer.Argument(help="A torchvision-format .safetensors or .pth state dict.")],
    source: Annotated[str | None, typer.Option(help="Name to store it under (default: imagenet, or the "
                                                    "variant a torchvision file name identifies).")] = None,
):
    """Convert a local torchvision-format weights file into the cache (for machines without internet)."""
    from ttlx.models import get_architecture
    from ttlx.models.pretrained import convert_file

    path = convert_file(get_architecture(arch), file, source)
    typer.echo(f"Converted {file} into {path}; use it with --pretrained {path.stem}.")


@weights_app.command("list")
@user_errors
def weights_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """List the named weights of every architecture, where they come from and whether they are cached."""
    from ttlx import registry
    from ttlx.models.architecture import Architecture
    from ttlx.models.pretrained import weights_rows
    from ttlx.report import print_rows

    rows = [row for entry in registry.models.entries() if isinstance(entry.obj, Architecture)
            for row in weights_rows(entry.obj)]
    if json_out:
        print_json(rows)
    else:
        print_rows(rows, title="Pretrained weights (cache: $TTLX_CACHE_DIR or ~/.cache/ttlx)")


# ---------------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------------
sweep_app = typer.Typer(help="Run a grid of train+eval runs and aggregate them like the paper's tables.",
                        invoke_without_command=True)
app.add_typer(sweep_app, name="sweep")


@sweep_app.callback()
@user_errors
def sweep(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (see `ttlx plugins`).")] = None,
    model: Annotated[str, typer.Option(help="Architecture of every run.")] = "resnet50",
    method: Annotated[str, typer.Option(help="Comma list of ftl, ttl, lwft, tf.")] = "ttl",
    trunc: Annotated[str, typer.Option(help="Block-wise points for ttl, e.g. -1,1,2,3.")] = "-1,1,2,3",
    layerwise: Annotated[str, typer.Option(help="Layer-wise points for ttl, e.g. 0..16 or 3,7,11.")] = "",
    freeze: Annotated[str, typer.Option(help="LWFT --freeze-until values, e.g. 0,1.")] = "0,1",
    slim_from: Annotated[str, typer.Option("--slim-from", help="TF --slim-from values.")] = "3",
    exp: Annotated[str, typer.Option(help="Repeats (split numbers), e.g. 1,2,3.")] = "1,2,3",
    sub: Annotated[str, typer.Option(help="Training subsets in percent, e.g. 10,20,50,100.")] = "100",
    grid_file: Annotated[Path | None, typer.Option("--grid", help="A TOML file holding the grid.")] = None,
    out: Annotated[Path | None, typer.Option(help="Sweep dir (default sweeps/<dataset>_<model>).")] = None,
    pretrained: Annotated[str, typer.Option(help="Weights every run starts from.")] = "imagenet",
    head: Annotated[str, typer.Option(help="flatten or pool.")] = "flatten",
    image_size: Annotated[int, typer.Option(help="Input size in pixels.")] = 224,
    bs: Annotated[int, typer.Option("--bs", "--batch-size", help="Global batch size.")] = 64,
    max_epoch: Annotated[int, typer.Option("--max-epoch", "--max_epoch", help="Most epochs per run.")] = 200,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of every run.")] = 0,
    num_workers: Annotated[int, typer.Option("--num-workers", "--num_workers", help="Loader workers.")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Data dir ($TTLX_DATA_DIR, ./data).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of each evaluation.")] = 1000,
    probe: Annotated[bool, typer.Option(help="First rank the points with linear probes on frozen features.")] = False,
    launcher: Annotated[str, typer.Option(help="local, slurm (submitit) or submitit-local.")] = "local",
    partition: Annotated[str | None, typer.Option(help="SLURM partition.")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs per SLURM job.")] = 1,
    time_min: Annotated[int, typer.Option("--time", help="SLURM time limit per run in minutes.")] = 1440,
    array_parallelism: Annotated[int, typer.Option(help="Most SLURM array tasks at once.")] = 16,
    account: Annotated[str | None, typer.Option(help="SLURM account.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Submit to SLURM and return.")] = False,
):
    """Run every train+eval run of a grid (finished runs are skipped), then write summary.csv/.md + figure.

    `ttlx sweep report SWEEP_DIR` rebuilds the summary of an existing sweep dir.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ttlx import launchers
    from ttlx import sweep as sweeps
    from ttlx.config import check_bootstrap

    # the launcher and its options are checked before the grid is expanded or the sweep dir is made
    check_bootstrap(bootstrap)
    options = launchers.SlurmOptions(partition=partition, gpus_per_node=gpus, timeout_min=time_min,
                                     array_parallelism=array_parallelism, account=account)
    launchers.check_launcher(launcher)
    compiling_command()

    if grid_file is not None:
        grid = sweeps.load_grid_file(grid_file)
    elif dataset is None:
        fail("Name the dataset with --dataset (or give a grid file with --grid).")
    else:
        base = {"pretrained": pretrained, "head": head, "image_size": image_size, "batch_size": bs,
                "max_epoch": max_epoch, "lr": lr, "seed": seed, "num_workers": num_workers,
                "data_dir": str(data_dir) if data_dir else None}
        grid = sweeps.Grid(
            dataset=dataset, model=model, methods=tuple(m.strip() for m in method.split(",") if m.strip()),
            trunc=sweeps.parse_int_list(trunc, "--trunc"), layerwise=sweeps.parse_int_list(layerwise, "--layerwise"),
            freeze=sweeps.parse_int_list(freeze, "--freeze"), slim_from=sweeps.parse_int_list(slim_from, "--slim-from"),
            exp=sweeps.parse_int_list(exp, "--exp"), sub=sweeps.parse_int_list(sub, "--sub"), base=base)
    sweep_dir = out or Path("sweeps") / f"{grid.dataset.lower()}_{grid.model.lower()}"

    def report(spec, status):
        typer.echo(f"{Path(spec.config.workdir).name}: {status}")

    if launcher == "local":
        def launch(specs):
            return launchers.launch_local(specs, bootstrap, report)
    else:
        def launch(specs):
            return launchers.launch_submitit(specs, bootstrap, report, kind=launcher,
                                             folder=sweep_dir / "submitit", options=options, wait=not no_wait)
    result = sweeps.run_sweep(grid, sweep_dir, launch=launch, probe=probe)
    _print_sweep(result)
    if result["failures"]:
        raise typer.Exit(code=1)


def _print_sweep(result) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    summary = Path(result["sweep_dir"]) / "summary.md"
    if summary.is_file():
        Console().print(Markdown(summary.read_text()))
    for failure in result["failures"]:
        typer.echo(f"failed: {failure}", err=True)
    typer.echo(f"{result['runs']} runs, {len(result['failures'])} failed; summary in {result['sweep_dir']}")


@sweep_app.command("report")
@user_errors
def sweep_report(sweep_dir: Annotated[Path, typer.Argument(help="A sweep dir written by `ttlx sweep`.")]):
    """Rebuild summary.csv, summary.md and the figure of a sweep dir from its runs."""
    from ttlx.sweep import GRID_FILE
    from ttlx.sweep_summary import write_summary

    if not (sweep_dir / GRID_FILE).is_file():
        fail(f"{sweep_dir} is not a sweep dir (no {GRID_FILE}); pass the --out dir of `ttlx sweep`.")
    rows = write_summary(sweep_dir)
    _print_sweep({"sweep_dir": str(sweep_dir), "runs": sum(r["repeats"] for r in rows), "failures": []})


def main() -> None:
    app()


if __name__ == "__main__":
    main()
