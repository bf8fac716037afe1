"""``ttlx sweep`` and ``ttlx sweep report``: grids of runs and their summary tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttlx.cli import options
from ttlx.cli.base import app, compiling_command, fail, user_errors
from ttlx.methods import METHODS

sweep_app = typer.Typer(help="Run a grid of train+eval runs and aggregate them like the paper's tables.",
                        invoke_without_command=True)
app.add_typer(sweep_app, name="sweep")


@sweep_app.callback()
@user_errors
def sweep(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (see `ttlx plugins`).")] = None,
    model: Annotated[str, typer.Option(help="Architecture of every run.")] = "resnet50",
    method: Annotated[str, typer.Option(help=f"Comma list of {', '.join(METHODS)}.")] = "ttl",
    trunc: Annotated[str, typer.Option(help="Block-wise points for ttl, e.g. -1,1,2,3.")] = "-1,1,2,3",
    layerwise: Annotated[str, typer.Option(help="Layer-wise points for ttl, e.g. 0..16 or 3,7,11.")] = "",
    freeze: Annotated[str, typer.Option(help="LWFT --freeze-until values, e.g. 0,1.")] = "0,1",
    slim_from: Annotated[str, typer.Option("--slim-from", help="TF --slim-from values.")] = "3",
    exp: Annotated[str, typer.Option(help="Repeats (split numbers), e.g. 1,2,3.")] = "1,2,3",
    sub: Annotated[str, typer.Option(help="Training subsets in percent, e.g. 10,20,50,100.")] = "100",
    grid_file: Annotated[Path | None, typer.Option("--grid", help="A TOML file holding the grid.")] = None,
    out: Annotated[Path | None, typer.Option(help="Sweep dir (default sweeps/<dataset>_<model>).")] = None,
    pretrained: Annotated[str, typer.Option(help="Weights every run starts from; a list (imagenet,chexpert) runs "
                                                 "every point once per source domain.")] = "imagenet",
    head: Annotated[str, typer.Option(help="flatten or pool.")] = "flatten",
    image_size: options.ImageSize = 224,
    window: Annotated[int | None, typer.Option(help="3D networks: slices per window (default 24).")] = None,
    bs: Annotated[int, typer.Option("--bs", "--batch-size", help="Global batch size.")] = 64,
    max_epoch: Annotated[int, typer.Option("--max-epoch", "--max_epoch", help="Most epochs per run.")] = 200,
    lr: options.LearningRate = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of every run.")] = 0,
    num_workers: Annotated[
        int | None, typer.Option("--num-workers", "--num_workers", help="Loader workers (default: as ttlx train).")
    ] = None,
    data_dir: options.DataDir = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of each evaluation.")] = 1000,
    probe: Annotated[bool, typer.Option(help="First rank the points with linear probes on frozen features.")] = False,
    launcher: Annotated[str, typer.Option(help="local, slurm (submitit) or submitit-local.")] = "local",
    partition: Annotated[str | None, typer.Option(help="SLURM partition.")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs per SLURM node.")] = 1,
    nodes: Annotated[int, typer.Option(help="SLURM nodes per run (one process each, --multihost).")] = 1,
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
    from ttlx.config import check_bootstrap
    from ttlx.sweeps import grid as sweeps
    from ttlx.sweeps import launchers

    # the launcher and its options are checked before the grid is expanded or the sweep dir is made
    check_bootstrap(bootstrap)
    options = launchers.SlurmOptions(partition=partition, gpus_per_node=gpus, timeout_min=time_min,
                                     array_parallelism=array_parallelism, account=account, nodes=nodes)
    launchers.check_launcher(launcher)
    launchers.check_nodes(launcher, options)
    compiling_command()

    if grid_file is not None:
        grid = sweeps.load_grid_file(grid_file)
    elif dataset is None:
        fail("Name the dataset with --dataset (or give a grid file with --grid).")
    else:
        sources = tuple(p.strip() for p in pretrained.split(",") if p.strip()) or ("imagenet",)
        base = {"pretrained": sources[0], "head": head, "image_size": image_size, "batch_size": bs,
                "max_epoch": max_epoch, "lr": lr, "seed": seed, "num_workers": num_workers,
                "data_dir": str(data_dir) if data_dir else None,
                **({"window": window} if window is not None else {})}  # 2D grids keep their saved grid.json
        grid = sweeps.Grid(
            dataset=dataset, model=model, methods=tuple(m.strip() for m in method.split(",") if m.strip()),
            trunc=sweeps.parse_int_list(trunc, "--trunc"), layerwise=sweeps.parse_int_list(layerwise, "--layerwise"),
            freeze=sweeps.parse_int_list(freeze, "--freeze"), slim_from=sweeps.parse_int_list(slim_from, "--slim-from"),
            exp=sweeps.parse_int_list(exp, "--exp"), sub=sweeps.parse_int_list(sub, "--sub"),
            pretrained=sources if len(sources) > 1 else (), base=base)
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
def sweep_report(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep dir written by `ttlx sweep`.")],
    paired: Annotated[bool, typer.Option(help="Also compare every run with the FTL run of its repeat on the "
                                              "same test images (paired.csv, paired.md).")] = False,
    bootstrap: Annotated[int, typer.Option(help="Paired resamples for --paired.")] = 1000,
):
    """Rebuild summary.csv, summary.md and the figure of a sweep dir from its runs."""
    from ttlx.config import check_int
    from ttlx.sweeps.grid import GRID_FILE
    from ttlx.sweeps.summary import write_summary

    check_int(bootstrap, "--bootstrap", 1)
    if not (sweep_dir / GRID_FILE).is_file():
        fail(f"{sweep_dir} is not a sweep dir (no {GRID_FILE}); pass the --out dir of `ttlx sweep`.")
    rows = write_summary(sweep_dir)
    _print_sweep({"sweep_dir": str(sweep_dir), "runs": sum(r["repeats"] for r in rows), "failures": []})
    if paired:
        from rich.console import Console
        from rich.markdown import Markdown

        from ttlx.sweeps.paired import write_paired

        write_paired(sweep_dir, resamples=bootstrap)
        Console().print(Markdown((sweep_dir / "paired.md").read_text()))
        typer.echo(f"Paired comparisons in {sweep_dir / 'paired.csv'} and {sweep_dir / 'paired.md'}")
