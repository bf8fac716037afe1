"""``ttlx train`` and ``ttlx eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttlx.cli import options
from ttlx.cli.base import app, compiling_command, print_json, user_errors


@app.command()
@user_errors
def train(
    dataset: options.Dataset = "digits",
    model: options.Model = "resnet50",
    trunc: Annotated[
        int, typer.Option(help="-1: whole backbone (FTL); 1..3 block-wise; units with --layerwise.")
    ] = -1,
    layerwise: Annotated[bool, typer.Option(help="--trunc counts units (bottlenecks...).")] = False,
    pretrained: Annotated[
        str, typer.Option(help="imagenet, imagenet-v2, chexpert, a chest-X-ray source (xrv-chex...; `ttlx weights "
                               "list`), random, a weights file or a ttlx run dir.")
    ] = "imagenet",
    head: Annotated[str, typer.Option(help="flatten (the reference code's default) or pool.")] = (
        "flatten"),
    pooling: Annotated[bool, typer.Option("--pooling", help="Same as --head pool.")] = False,
    image_size: options.ImageSize = 224,
    window: Annotated[
        int | None, typer.Option(help="3D networks: slices per window (default 24); the in-plane size is --image-size.")
    ] = None,
    exp: Annotated[int, typer.Option(help="Which random split (repeat) to train on.")] = 1,
    sub: Annotated[int, typer.Option(help="Percent of the training and validation split to use.")] = 100,
    bs: Annotated[int, typer.Option("--bs", "--batch-size", help="Global batch size over all devices.")] = 64,
    lr: options.LearningRate = 1e-4,
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
    recipe: Annotated[str, typer.Option(help="paper (Adam, plateau) or penet: the PENet reference's focal loss, "
                                             "SGD and warmup-cosine (give --lr 0.01).")] = "paper",
    stochastic_depth: Annotated[bool, typer.Option(help="PENet: skip blocks at random in training.")] = True,
    num_workers: Annotated[int | None, typer.Option("--num-workers", "--num_workers", help="Loader worker "
                                                    "processes (default: 0 on CPU, up to 8 per GPU).")] = None,
    data_parallel: Annotated[
        bool, typer.Option("--data_parallel", "--data-parallel", help="Accepted; all devices are used.")
    ] = False,
    data_dir: options.DataDir = None,
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
        dtype=dtype, window=window, exp=exp, sub=sub, batch_size=bs, lr=lr, weight_decay=weight_decay,
        max_epoch=max_epoch,
        plateau_factor=factor, plateau_patience=patience, min_lr=min_lr, class_weighted=class_weights,
        freeze_until=freeze_until, ptl_decay=ptl_decay, seed=seed, num_workers=num_workers,
        recipe=recipe, stochastic_depth=stochastic_depth,
        data_dir=str(data_dir) if data_dir else None, workdir=str(workdir) if workdir else None,
    )  # fmt: skip
    compiling_command()
    if multihost:
        from ttlx.training.multihost import initialize

        initialize(coordinator, num_processes, process_id)
    from ttlx.runs.run_dir import RunDir
    from ttlx.training import loop as training
    from ttlx.training.multihost import ending_promptly
    from ttlx.training.stopping import TrainingStopped

    run_dir = training.resolve_run_dir(cfg)
    if not (test and RunDir(run_dir).finished() and not force):
        try:
            with ending_promptly():  # several processes: an error in one ends every one, soon, in one sentence
                run_dir = training.train(cfg, force=force, progress=progress)
        except TrainingStopped as stop:  # SIGTERM or Ctrl-C: the step finished and was saved
            from ttlx.data.worker_signals import release_shared_memory

            release_shared_memory()  # the loaders' last batches, before the process ends
            typer.echo(str(stop), err=True)
            raise typer.Exit(code=stop.exit_code) from None
    if test:
        from ttlx.config import EvalConfig

        with ending_promptly():
            _evaluate(EvalConfig(run_dir=str(run_dir), bootstrap=bootstrap), False)


@app.command(name="eval")
@user_errors
def eval_run(
    run_dir: Annotated[Path, typer.Argument(help="A run dir written by `ttlx train`.")],
    split: options.Split = "test",
    checkpoint: options.Checkpoint = "best",
    bootstrap: Annotated[int, typer.Option(help="Resamples for the 95% intervals; 0: none.")] = 1000,
    data_dir: options.RunDataDir = None,
    json_out: options.JsonOutput = False,
    aggregate: Annotated[
        str, typer.Option(help="Volumes: a study's probability, the max (PENet) or mean over its windows.")
    ] = "max",
):
    """Evaluate a run dir: accuracy, AUROC, AUPRC with bootstrap intervals, confusion matrix and cost."""
    from ttlx.config import EvalConfig

    cfg = EvalConfig(run_dir=str(run_dir), split=split, checkpoint=checkpoint, bootstrap=bootstrap,
                     data_dir=str(data_dir) if data_dir else None, aggregate=aggregate)  # checks the options first
    compiling_command()
    _evaluate(cfg, json_out)


def _evaluate(cfg, json_out: bool) -> None:
    from ttlx.evaluation.evaluate import evaluate_run

    result = evaluate_run(cfg, show=not json_out)
    if json_out:
        print_json(result)


@app.command()
@user_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run dir written by `ttlx train`.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files, or folders searched for them.")],
    out: Annotated[Path | None, typer.Option(help="CSV to write (default RUN_DIR/predictions_files.csv).")] = None,
    checkpoint: options.Checkpoint = "best",
    bs: options.ForwardBatch = 32,
    data_dir: Annotated[Path | None, typer.Option(help="Prepared data, for runs that predate ttlx recording "
                                                       "how their images were stored.")] = None,
    json_out: options.JsonOutput = False,
):
    """Class probabilities of image files from a trained run, one CSV row per file."""
    compiling_command()
    from ttlx.evaluation.predict import predict_files

    path, summary = predict_files(run_dir, paths, out=out, checkpoint=checkpoint, batch_size=bs, data_dir=data_dir)
    if json_out:
        print_json({"predictions": str(path), **summary})
        return
    kind = "with probability above 0.5" if summary["multilabel"] else "predicted"
    counts = ", ".join(f"{name} {n}" for name, n in summary["predicted"].items() if n) or "none"
    typer.echo(f"{summary['files']} file(s); {kind}: {counts}")
    typer.echo(f"Wrote {path}")
