"""Sweeps across source domains: ``pretrained = ["imagenet", "chexpert"]`` in a grid runs every point once
per source; the summary, its table and its figure group by source (the paper's source-domain comparison)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttlx.errors import ConfigError
from ttlx.sweeps.grid import Grid, expand, grid_from_dict
from ttlx.sweeps.summary import collect_runs, markdown_table, summarize, truncation_figure


def test_a_grid_over_sources_runs_each_point_once_per_source():
    grid = grid_from_dict({"dataset": "digits", "model": "densenet121", "methods": "ttl", "trunc": [1, 2],
                           "exp": [1], "pretrained": ["imagenet", "chexpert"]})
    assert grid.pretrained == ("imagenet", "chexpert") and "pretrained" not in grid.base
    specs = expand(grid)
    assert [(s.point, s.config.pretrained) for s in specs] == [
        ("t1", "imagenet"), ("t1", "chexpert"), ("t2", "imagenet"), ("t2", "chexpert")]
    assert grid_from_dict({"dataset": "digits", "pretrained": "random"}).pretrained == ()  # one source: shared
    with pytest.raises(ConfigError, match=r"The grid's pretrained must be a list of sources, e\.g\. pretrained = "):
        Grid(dataset="digits", pretrained=("imagenet", 3))


def record(source, point, exp, auroc, params):
    return {"source": source, "method": "ttl", "point": point, "order": int(point[1:]), "sub": 100, "exp": exp,
            "run": f"{source}{point}{exp}", "auroc": auroc, "auprc_trapz": auroc - 0.1, "auprc": auroc - 0.1,
            "accuracy": 0.8, "balanced_accuracy": 0.8, "params": params, "gmacs_ptflops": 1.0, "gmacs": 1.0,
            "latency_ms": None}


def test_the_summary_table_and_figure_group_by_source(tmp_path):
    records = [record(s, p, e, a + (0.05 if s == "chexpert" else 0) + 0.01 * e, n)
               for s in ("imagenet", "chexpert") for p, a, n in (("t1", 0.80, 377_856), ("t2", 0.85, 1_429_632))
               for e in (1, 2)]
    rows = summarize(records)
    assert [(r["source"], r["point"], r["repeats"]) for r in rows] == [
        ("chexpert", "t1", 2), ("chexpert", "t2", 2), ("imagenet", "t1", 2), ("imagenet", "t2", 2)]
    assert rows[0]["auroc"] == pytest.approx(0.865) and rows[2]["auroc"] == pytest.approx(0.815)
    table = markdown_table(rows)
    assert table.splitlines()[0].startswith("| source | method | point |")
    assert "| chexpert | ttl | t1 | 100 | 2 | 0.865 ± 0.007 |" in table
    assert "| source |" not in markdown_table([r for r in rows if r["source"] == "imagenet"])  # one source
    path = truncation_figure(rows, tmp_path / "summary_auroc.png")
    assert path.stat().st_size > 1000


def test_runs_name_a_substituted_source_with_what_it_resolved_to(tmp_path):
    for name, source in (("a", {"name": "chexpert", "resolved": "xrv-chex", "input": "xrv"}), ("b", None)):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        train = {"pretrained": "chexpert" if source else "imagenet", "trunc": 1, "layerwise": False, "sub": 100,
                 "exp": 1}
        config = {"train": train, **({"source": source} if source else {})}
        (run / "config.json").write_text(json.dumps(config))
        (run / "eval_test.json").write_text(json.dumps({"auroc": float(np.float32(0.9))}))
    assert [r["source"] for r in collect_runs(tmp_path)] == ["chexpert (xrv-chex)", "imagenet"]


def test_the_sweep_command_takes_a_list_of_sources(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ttlx.cli import app
    from ttlx.sweeps import grid as sweeps

    seen = []

    def run_sweep(grid, sweep_dir, launch, probe):
        seen.append([(s.point, s.config.pretrained) for s in expand(grid)])
        return {"sweep_dir": str(sweep_dir), "runs": 0, "failures": []}

    monkeypatch.setattr(sweeps, "run_sweep", run_sweep)
    result = CliRunner().invoke(app, ["sweep", "--dataset", "digits", "--model", "densenet121", "--trunc", "2",
                                      "--exp", "1", "--pretrained", "imagenet,chexpert", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen == [[("t2", "imagenet"), ("t2", "chexpert")]]
