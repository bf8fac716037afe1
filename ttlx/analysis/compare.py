"""SVCCA between a fine-tuned network and its pretrained start at every kept unit, as JSON and a box plot."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ttlx.analysis.activations import collect, take
from ttlx.analysis.svcca import chance_level, svcca


def compare_layers(finetuned, pretrained, batches: Iterable, *, positions: int = 16, limit: int | None = None,
                   keep: float = 0.99, seed: int = 0) -> dict[str, dict]:
    """SVCCA of the two networks' activations at every unit both have, in the fine-tuned network's order.

    ``batches`` is iterated once and the same images go through both networks. Each entry holds the
    mean coefficient, the coefficient list, the kept dimensions, the number of data points and the
    chance level (the mean after shuffling one side's rows).
    """
    batches = take(batches, limit)
    acts_ft = collect(finetuned, batches, positions=positions, seed=seed)
    acts_pt = collect(pretrained, batches, positions=positions, seed=seed)
    common = [name for name in acts_ft if name in acts_pt]
    if not common:
        raise ValueError("The two networks share no unit names; SVCCA compares units of one architecture.")
    results = {}
    for name in common:
        result = svcca(acts_ft[name], acts_pt[name], keep)
        results[name] = {**result.to_dict(), "chance": chance_level(acts_ft[name], acts_pt[name], keep, seed)}
    return results


def write_svcca(results: dict[str, dict], out_dir: str | Path, *, title: str = "") -> tuple[Path, Path]:
    """Write ``svcca.json`` and ``svcca.png`` (one box of coefficients per layer) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "svcca.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    png_path = out / "svcca.png"
    plot_svcca(results, png_path, title=title)
    return json_path, png_path


def plot_svcca(results: dict[str, dict], path: str | Path, *, title: str = "") -> None:
    """Box plot of the CCA coefficients per layer, the SVCCA mean as a dot and the chance level as a dash."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    positions = np.arange(1, len(names) + 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.0))
    ax.boxplot([results[n]["coefficients"] for n in names], positions=positions, widths=0.6,
               showfliers=False)
    ax.plot(positions, [results[n]["mean"] for n in names], "o", color="tab:red", label="SVCCA mean")
    chance = [results[n].get("chance") for n in names]
    if all(c is not None for c in chance):
        ax.plot(positions, chance, "_", color="tab:gray", markersize=14, label="chance (shuffled)")
    ax.set_xticks(positions, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("CCA coefficient")
    ax.set_title(title or "SVCCA: fine-tuned vs pretrained")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
