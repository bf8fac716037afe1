"""``ttlx analyze cost|svcca|gradcam|paired``: measure a model or a run, or compare two runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttlx.cli import options
from ttlx.cli.base import app, compiling_command, print_json, user_errors

analyze_app = typer.Typer(help="Measure a model: cost, SVCCA, Grad-CAM; compare two runs.",
                          no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("cost")
@user_errors
def analyze_cost(
    model: options.Model = "resnet50",
    trunc: Annotated[int, typer.Option(help="Truncation point: -1 (full backbone), 1..3 block-wise, or units "
                                            "kept with --layerwise.")] = -1,
    layerwise: Annotated[bool, typer.Option(help="--trunc counts units (bottlenecks, dense layers).")]
    = False,
    head: Annotated[str, typer.Option(help="pool, flatten or none (feature map only).")] = "pool",
    classes: Annotated[int, typer.Option(help="Classes of the head.")] = 2,
    image_size: options.ImageSize = 224,
    slim_from: Annotated[int | None, typer.Option("--slim-from", "--slim_from",
                                                  help="TF: stages from this one at reduced width.")] = None,
    slim_factor: Annotated[int, typer.Option("--slim-factor", "--slim_factor", help="TF width divisor.")] = 2,
    window: Annotated[int | None, typer.Option(help="Slices per window of a 3D network (default 24).")] = None,
    repeats: Annotated[int, typer.Option(help="Timed forward passes for the latency median (0: skip).")]
    = 20,
    json_out: options.JsonOutput = False,
):
    """Parameters, GMACs (conv+linear and ptflops-style) and batch-1 latency of a (truncated) model."""
    compiling_command()
    from ttlx.cost.model_cost import model_cost, summary_rows
    from ttlx.errors import ConfigError
    from ttlx.models import resolve_config
    from ttlx.report.tables import print_rows

    if repeats < 0:
        raise ConfigError(f"--repeats must be 0 (no timing) or more, got {repeats}.")
    _, cfg = resolve_config(model, trunc, layerwise=layerwise, head=head, num_classes=classes,
                            image_size=image_size, slim_from=slim_from, slim_factor=slim_factor, window=window)
    cost = model_cost(cfg, repeats=repeats)
    if json_out:
        print_json(cost)
    else:
        print_rows(summary_rows(cost), title="Model cost (batch 1)")


RunDirArgument = Annotated[Path, typer.Argument(help="A run dir written by `ttlx train`.")]


@analyze_app.command("svcca")
@user_errors
def analyze_svcca(
    run_dir: RunDirArgument,
    split: options.Split = "test",
    n: Annotated[int, typer.Option("--n", help="Images in the sample.")] = 256,
    positions: Annotated[int, typer.Option(help="Random positions per image of each conv map.")] = 16,
    keep: Annotated[float, typer.Option(help="Share of variance the SVD step keeps.")] = 0.99,
    batch_size: options.ForwardBatch = 32,
    checkpoint: options.Checkpoint = "best",
    out: Annotated[Path | None, typer.Option(help="Output dir (default RUN_DIR/analysis/svcca).")] = None,
    data_dir: options.RunDataDir = None,
    json_out: options.JsonOutput = False,
):
    """SVCCA between the fine-tuned run and the network it started from, at every kept layer."""
    compiling_command()
    from ttlx.analysis.runs import svcca_of_run
    from ttlx.errors import ConfigError
    from ttlx.report.tables import print_rows

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
    split: options.Split = "test",
    n: Annotated[int, typer.Option("--n", help="Images (volumes: windows) of the split to explain.")] = 8,
    layer: Annotated[str | None, typer.Option(help="Unit to explain (default: the last kept one).")] = None,
    checkpoint: options.Checkpoint = "best",
    out: Annotated[Path | None, typer.Option(help="Output dir (default RUN_DIR/analysis/gradcam_SPLIT).")]
    = None,
    data_dir: options.RunDataDir = None,
):
    """Grad-CAM heat maps of the predicted class at the last kept stage, one overlay PNG per image (volumes: one
    slice montage per window)."""
    compiling_command()
    from ttlx.analysis.runs import gradcam_of_run

    written = gradcam_of_run(run_dir, split=split, count=n, paths=images or (), layer=layer, out=out,
                             data_dir=data_dir, checkpoint=checkpoint)
    typer.echo(f"Wrote {len(written)} PNG(s) and gradcam.json to {written[0].parent}")


@analyze_app.command("paired")
@user_errors
def analyze_paired(
    run_a: Annotated[Path, typer.Argument(help="Run dir (or predictions CSV) A, e.g. FTL.")],
    run_b: Annotated[Path, typer.Argument(help="Run dir (or predictions CSV) B, e.g. TTL-2.")],
    split: Annotated[str, typer.Option(help="The evaluated split both runs' predictions come from.")] = "test",
    bootstrap: Annotated[int, typer.Option(help="Paired resamples of the images.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
    json_out: options.JsonOutput = False,
):
    """B minus A on the same images: each metric's difference, 95% paired bootstrap interval and p-value."""
    from ttlx.analysis.paired import p_text, paired_comparison
    from ttlx.report.tables import print_rows

    result = paired_comparison(run_a, run_b, split=split, resamples=bootstrap, seed=seed)
    if json_out:
        print_json(result)
        return
    rows = [{"metric": key, "A": f"{m['a']:.4f}", "B": f"{m['b']:.4f}", "B - A": f"{m['difference']:+.4f}",
             "95% CI": f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]", "p": p_text(m["p_value"], bootstrap)}
            for key, m in result["metrics"].items()]
    print_rows(rows, title=f"B minus A on the same {result['num_examples']} {split} images "
                           f"({bootstrap} paired resamples)")
    typer.echo(f"A: {result['a']}\nB: {result['b']}")
