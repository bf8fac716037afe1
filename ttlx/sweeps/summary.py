"""The aggregate of a sweep: ``summary.csv``, ``summary.md`` and the metric-against-truncation figure.

One row per configuration (source, method, point, subset), metrics as mean ± sample standard deviation (ddof=1,
as the paper) over the repeats found, cost columns as in the paper's table. AUPRC is the paper's
trapezoidal area; sklearn's average precision is kept next to it. When ``probe.json`` exists (from
``ttlx sweep --probe``), its ranking stands next to the fine-tuned results. A grid over source domains
(``pretrained = ["imagenet", "chexpert"]``) gets a ``source`` column (the run's ``--pretrained``, and what
it resolved to where that differs) and one line per source in the figure: the paper's comparison.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ttlx.methods import run_label

METRICS = ("auroc", "auprc_trapz", "auprc", "accuracy", "balanced_accuracy")
COST = ("params", "gmacs_ptflops", "gmacs", "latency_ms")


def collect_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per evaluated run under ``<sweep dir>/runs``."""
    records = []
    for run in sorted((sweep_dir / "runs").glob("*/eval_test.json")):
        result = json.loads(run.read_text())
        config = json.loads((run.parent / "config.json").read_text())
        train = config["train"]
        method, point, order = run_label(train)
        records.append({"source": source_label(train, config.get("source")), "method": method, "point": point,
                        "order": order, "sub": train["sub"],
                        "exp": train["exp"], "run": run.parent.name, **{m: result.get(m) for m in METRICS},
                        **{c: result.get("cost", {}).get(c) for c in COST}})
    return records


def source_label(train: dict[str, Any], source: dict[str, Any] | None) -> str:
    """``chexpert``, or ``chexpert (xrv-chex)`` when the run's source resolved to a substitute."""
    name = str(train.get("pretrained", "imagenet"))
    resolved = (source or {}).get("resolved", name)
    return name if resolved == name else f"{name} ({resolved})"


def mean_std(values: list[float]) -> tuple[float, float]:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return math.nan, math.nan
    return float(np.mean(clean)), float(np.std(clean, ddof=1)) if len(clean) > 1 else math.nan


def summarize(records: list[dict[str, Any]], probe: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Group runs by (source, method, point, sub) and aggregate over repeats."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        source = rec.get("source", "imagenet")
        groups.setdefault((source, rec["order"], rec["method"], rec["point"], rec["sub"]), []).append(rec)
    rows = []
    for (source, _, method, point, sub), runs in sorted(groups.items()):
        row: dict[str, Any] = {"source": source, "method": method, "point": point, "sub": sub,
                               "repeats": len(runs)}
        for metric in METRICS:
            row[metric], row[f"{metric}_std"] = mean_std([r[metric] for r in runs])
        for column in COST:
            row[column] = runs[0][column]
        if probe and point in probe:
            row["probe_auroc"], row["probe_rank"] = probe[point]["auroc"], probe[point]["rank"]
        rows.append(row)
    return rows


def load_probe(sweep_dir: Path) -> dict[str, Any] | None:
    path = sweep_dir / "probe.json"
    if not path.is_file():
        return None
    ranked = {}
    for row in json.loads(path.read_text()):
        label = run_label({"trunc": row["trunc"], "layerwise": row["layerwise"]})[1]
        ranked[label] = {"auroc": row["probe_auroc"], "rank": row["rank"]}
    return ranked


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _pm(row: dict[str, Any], metric: str) -> str:
    mean, std = row[metric], row[f"{metric}_std"]
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _num(value, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The paper's table layout: AUROC, AUPRC (± over repeats), accuracy, params (M), GMACs, latency."""
    probe = any("probe_rank" in row for row in rows)
    sources = len({row.get("source") for row in rows}) > 1  # a source-domain comparison
    head = ["source"] * sources + ["method", "point", "sub", "n", "AUROC", "AUPRC", "accuracy", "params (M)",
                                   "GMACs", "latency (ms)"]
    head += ["probe AUROC", "probe rank"] if probe else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        params = None if row["params"] is None else row["params"] / 1e6
        cells = [row["source"]] * sources + [
                 row["method"], row["point"], str(row["sub"]), str(row["repeats"]), _pm(row, "auroc"),
                 _pm(row, "auprc_trapz"), _pm(row, "accuracy"), _num(params, ".2f"),
                 _num(row["gmacs_ptflops"], ".2f"), _num(row["latency_ms"], ".2f")]
        if probe:
            cells += [_num(row.get("probe_auroc"), ".3f"), _num(row.get("probe_rank"), "d")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def truncation_figure(rows: list[dict[str, Any]], path: Path, metric: str = "auroc") -> Path:
    """The paper's pooling figure: the metric against the truncation point, parameter bars behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def label(r: dict[str, Any]) -> str:
        return f"{r['method']} {r['point']}" + (f" ({r['sub']}%)" if r["sub"] != 100 else "")

    labels = list(dict.fromkeys(label(r) for r in rows))  # one x position per configuration, shared by sources
    sources = list(dict.fromkeys(r.get("source", "imagenet") for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(labels) + 2), 3.5))
    x = np.arange(len(labels))
    params = {label(r): (r["params"] or 0) / 1e6 for r in rows}
    bars = ax.twinx()
    bars.bar(x, [params[name] for name in labels], color="0.85", zorder=0)
    bars.set_ylabel("parameters (M)")
    ax.set_zorder(bars.get_zorder() + 1)
    ax.patch.set_visible(False)
    for index, source in enumerate(sources):  # one line per source domain
        mine = {label(r): r for r in rows if r.get("source", "imagenet") == source}
        at = [i for i, name in enumerate(labels) if name in mine]
        ax.errorbar(x[at], [mine[labels[i]][metric] for i in at],
                    yerr=[0 if math.isnan(s) else s for s in (mine[labels[i]][f"{metric}_std"] for i in at)],
                    fmt="o-", color=f"C{index}", capsize=3, label=source if len(sources) > 1 else None)
    if len(sources) > 1:
        ax.legend(title="source", fontsize="small")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(metric.upper())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Rebuild ``summary.csv``, ``summary.md`` and ``summary_auroc.png`` from the sweep's run dirs."""
    sweep_dir = Path(sweep_dir)
    rows = summarize(collect_runs(sweep_dir), load_probe(sweep_dir))
    write_csv(rows, sweep_dir / "summary.csv")
    (sweep_dir / "summary.md").write_text(markdown_table(rows))
    if rows:
        truncation_figure(rows, sweep_dir / "summary_auroc.png")
    return rows
