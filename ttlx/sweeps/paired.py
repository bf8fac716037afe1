"""Every run of a sweep against the FTL run of its repeat, on the same test images (``ttlx sweep report
--paired``): ``paired.csv`` and ``paired.md``.

The summary's mean ± std over repeats says how much the splits move a method; whether a truncated network
is as accurate as full fine-tuning on a given split is a paired question. Each run's ``predictions_test.csv``
is compared with that of the FTL run of the same dataset, model, weights, image size, repeat (``exp``) and
subset (``sub``; :data:`PAIRED_ON`) with ``ttlx.analysis.paired``: B minus A for AUROC and the paper's AUPRC, a
95% paired bootstrap interval and a p-value. Runs without exactly one such FTL run are left out, and named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttlx.errors import UserError
from ttlx.methods import run_label
from ttlx.sweeps.summary import write_csv

PAIRED_METRICS = ("auroc", "auprc_trapz")


def evaluated_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """(method, point, order, sub, exp, run dir) of every run under ``runs/`` with test predictions."""
    runs = []
    for predictions in sorted((sweep_dir / "runs").glob("*/predictions_test.csv")):
        train = json.loads((predictions.parent / "config.json").read_text())["train"]
        method, point, order = run_label(train)
        runs.append({"method": method, "point": point, "order": order, "sub": train["sub"], "exp": train["exp"],
                     "path": predictions.parent, "pairs_with": tuple(train.get(key) for key in PAIRED_ON)})
    return runs


# what a run shares with the FTL run it is compared to (a grid may vary the weights or the input size too)
PAIRED_ON = ("dataset", "model", "pretrained", "image_size", "exp", "sub")


def paired_rows(sweep_dir: str | Path, *, resamples: int = 1000, seed: int = 0) -> tuple[list[dict], list[str]]:
    """One row per (run, FTL run of its repeat and subset); and the runs left out: those without exactly one
    such FTL run, and (with the reason) those whose predictions cannot be paired with its."""
    from ttlx.analysis.paired import paired_comparison

    runs = evaluated_runs(Path(sweep_dir))
    ftl: dict[tuple, list[dict]] = {}
    for run in runs:
        if run["method"] == "ftl":
            ftl.setdefault(run["pairs_with"], []).append(run)
    rows, alone = [], []
    for run in sorted(runs, key=lambda r: (r["order"], r["sub"], r["exp"])):
        if run["method"] == "ftl":
            continue
        references = ftl.get(run["pairs_with"], [])
        if len(references) != 1:  # none, or several that differ in what the grid varies besides the method
            alone.append(run["path"].name)
            continue
        reference = references[0]
        try:
            result = paired_comparison(reference["path"], run["path"], resamples=resamples, seed=seed)
        except UserError as err:  # e.g. evaluated on another preparation of the data: say so, go on
            alone.append(f"{run['path'].name} ({err})")
            continue
        row = {"method": run["method"], "point": run["point"], "sub": run["sub"], "exp": run["exp"],
               "images": result["num_examples"]}
        for metric in PAIRED_METRICS:
            m = result["metrics"].get(metric)
            if m is None:
                continue
            row.update({f"{metric}_ftl": m["a"], metric: m["b"], f"{metric}_diff": m["difference"],
                        f"{metric}_low": m["ci"][0], f"{metric}_high": m["ci"][1], f"{metric}_p": m["p_value"]})
        row.update(run=run["path"].name, ftl_run=reference["path"].name)
        rows.append(row)
    return rows, alone


def verdict(row: dict[str, Any], metric: str = "auroc") -> str:
    """'better', 'worse' or 'no difference shown' from the 95% interval of B minus A."""
    if row.get(f"{metric}_low") is None:
        return "n/a"
    if row[f"{metric}_low"] > 0:
        return "better"
    if row[f"{metric}_high"] < 0:
        return "worse"
    return "no difference shown"


def markdown(rows: list[dict[str, Any]], alone: list[str], resamples: int) -> str:
    from ttlx.analysis.paired import p_text

    head = ["method", "point", "sub", "exp", "AUROC − FTL (95% CI)", "p", "AUPRC − FTL (95% CI)", "p",
            "AUROC against FTL"]
    lines = [f"Each run against the FTL run of its repeat on the same test images ({resamples} paired "
             "resamples).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["method"], row["point"], str(row["sub"]), str(row["exp"])]
        for metric in PAIRED_METRICS:
            if f"{metric}_diff" in row:
                cells += [f"{row[f'{metric}_diff']:+.3f} ({row[f'{metric}_low']:+.3f}, {row[f'{metric}_high']:+.3f})",
                          p_text(row[f"{metric}_p"], resamples)]
            else:
                cells += ["n/a", "n/a"]
        cells.append(verdict(row))
        lines.append("| " + " | ".join(cells) + " |")
    if alone:
        lines += ["", "Left out (no single evaluated FTL run of the same dataset, model, weights, image size, "
                  f"repeat and subset, or predictions that cannot be paired with its): {'; '.join(alone)}."]
    return "\n".join(lines) + "\n"


def write_paired(sweep_dir: str | Path, *, resamples: int = 1000, seed: int = 0) -> tuple[list[dict], list[str]]:
    """Write ``paired.csv`` and ``paired.md`` into the sweep dir; returns the rows and the runs left alone."""
    sweep_dir = Path(sweep_dir)
    rows, alone = paired_rows(sweep_dir, resamples=resamples, seed=seed)
    write_csv(rows, sweep_dir / "paired.csv")
    (sweep_dir / "paired.md").write_text(markdown(rows, alone, resamples))
    return rows, alone
