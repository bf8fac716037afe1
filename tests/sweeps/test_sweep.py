"""Sweeps: grid expansion and checks, the sweep dir, local and submitit launchers, and the summary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from fake_data import FakeData

import ttlx.data
from ttlx.errors import ConfigError
from ttlx.sweeps import launchers
from ttlx.sweeps.grid import Grid, expand, grid_from_dict, load_grid_file, open_sweep_dir, parse_int_list, run_sweep
from ttlx.sweeps.summary import markdown_table, summarize

TINY = {"pretrained": "random", "head": "pool", "image_size": 32, "batch_size": 8, "lr": 1e-2, "max_epoch": 2}


def labels(specs):
    return [(s.method, s.point, s.config.exp) for s in specs]


def test_grid_expands_every_method_point_and_repeat():
    grid = Grid(dataset="digits", methods=("ftl", "ttl", "lwft", "tf"), trunc=(3,), layerwise=(11,),
                freeze=(0, 1), slim_from=(3,), exp=(1, 2))
    specs = expand(grid)
    assert labels(specs)[::2] == [("ftl", "full", 1), ("ttl", "t3", 1), ("ttl", "lw11", 1),
                                  ("lwft", "freeze0", 1), ("lwft", "freeze1", 1), ("tf", "slim3", 1)]
    tf = specs[-1].config
    assert (tf.trunc, tf.slim_from, tf.exp) == (-1, 3, 2)
    lw = specs[4].config
    assert (lw.trunc, lw.layerwise) == (11, True)


@pytest.mark.parametrize("grid,message", [
    (Grid(dataset="digits", trunc=(-1, 4)),
     "The grid names truncation point 4, which resnet50 lacks; use -1, 1, 2, 3."),
    (Grid(dataset="digits", layerwise=(17,)), "The grid names layer-wise point 17, which resnet50 lacks; use 0..16."),
    (Grid(dataset="digits", methods=("ttl", "magic")), "Unknown method 'magic' in the grid; choose from ftl, ttl"),
    (Grid(dataset="digits", methods=("tf",), slim_from=(7,)), "The grid slims from stage 7, which resnet50 lacks"),
])
def test_bad_grid_entries_are_named_before_any_run(grid, message):
    with pytest.raises(ConfigError) as err:
        expand(grid)
    assert str(err.value).startswith(message)


def test_int_lists_take_ranges_and_negative_points():
    assert parse_int_list("-1,1..3", "--trunc") == (-1, 1, 2, 3)
    with pytest.raises(ConfigError, match="--exp takes integers like 1,2,3 or 0..16, not 'x'"):
        parse_int_list("1,x", "--exp")


def test_toml_grid_keys_split_into_grid_and_shared_options():
    grid = grid_from_dict({"dataset": "digits", "trunc": [2, 3], "max-epoch": 5, "pretrained": "random"})
    assert grid.trunc == (2, 3) and grid.base == {"max_epoch": 5, "pretrained": "random"}
    with pytest.raises(ConfigError, match="Unknown grid key 'colour'"):
        grid_from_dict({"dataset": "digits", "colour": "red"})


def test_the_readme_grid_file_loads_and_expands(tmp_path):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    toml_text = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "grid.toml"
    path.write_text(toml_text)
    grid = load_grid_file(path)
    assert grid.methods == ("ftl", "ttl", "lwft", "tf") and grid.layerwise == (3, 7, 11)
    assert grid.base == {"pretrained": "imagenet", "max_epoch": 200}
    # ftl + 3 block + 3 layer-wise ttl points + 2 lwft + 1 tf, three repeats each
    assert len(expand(grid)) == (1 + 3 + 3 + 2 + 1) * 3


def test_grid_file_errors_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="Grid file .*missing.toml does not exist"):
        load_grid_file(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("dataset = [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML \(.*\); fix the file."):
        load_grid_file(tmp_path / "bad.toml")


def test_a_sweep_dir_refuses_another_grid(tmp_path):
    open_sweep_dir(tmp_path, Grid(dataset="digits", trunc=(1, 2)))
    open_sweep_dir(tmp_path, Grid(dataset="digits", trunc=(1, 2)))  # the same grid is fine
    with pytest.raises(ConfigError, match=r"holds a sweep of another grid \(differs in trunc\)"):
        open_sweep_dir(tmp_path, Grid(dataset="digits", trunc=(1, 3)))
    # another loader worker count changes no result, another learning rate does
    open_sweep_dir(tmp_path, Grid(dataset="digits", trunc=(1, 2), base={"num_workers": 4}))
    with pytest.raises(ConfigError, match=r"another grid \(differs in base\)"):
        open_sweep_dir(tmp_path, Grid(dataset="digits", trunc=(1, 2), base={"num_workers": 4, "lr": 1e-3}))


def test_summary_is_mean_and_sample_std_over_repeats():
    records = [{"method": "ttl", "point": "t1", "order": 100, "sub": 100, "exp": e, "run": str(e), "auroc": a,
                "auprc_trapz": a - 0.1, "auprc": a - 0.05, "accuracy": 0.8, "balanced_accuracy": 0.7,
                "params": 225_344, "gmacs_ptflops": 0.8, "gmacs": 0.79, "latency_ms": 1.5}
               for e, a in [(1, 0.90), (2, 0.92), (3, 0.97)]]
    (row,) = summarize(records)
    assert row["repeats"] == 3
    assert row["auroc"] == pytest.approx(np.mean([0.90, 0.92, 0.97]))
    assert row["auroc_std"] == pytest.approx(np.std([0.90, 0.92, 0.97], ddof=1))
    assert "| ttl | t1 | 100 | 3 | 0.930 ± 0.036 | 0.830 ± 0.036 | 0.800 ± 0.000 | 0.23 | 0.80 | 1.50 |" in (
        markdown_table([row]))


@pytest.fixture
def fake_source(monkeypatch, tinynet):
    monkeypatch.setattr(ttlx.data, "data_source", FakeData)
    return FakeData


def tiny_grid(**kw):
    return Grid(dataset="fake", model="tinynet", trunc=(1,), exp=(1, 2), base=TINY, **kw)


@pytest.mark.slow
def test_local_sweep_runs_every_run_skips_finished_ones_and_survives_a_failure(tmp_path, fake_source, monkeypatch):
    seen = []

    def launch(specs):
        return launchers.launch_local(specs, 20, lambda spec, status: seen.append(status))

    result = run_sweep(tiny_grid(), tmp_path, launch=launch)
    assert result["failures"] == [] and seen == ["done"] * 2
    rows = {row["point"]: row for row in result["rows"]}
    assert set(rows) == {"t1"} and rows["t1"]["repeats"] == 2
    eval_files = sorted((tmp_path / "runs").glob("tinynet_t1_*/eval_test.json"))
    evals = [json.loads(p.read_text())["auroc"] for p in eval_files]
    assert rows["t1"]["auroc"] == pytest.approx(np.mean(evals))
    assert (tmp_path / "summary.csv").read_text().startswith("source,method,point,sub,repeats,auroc,auroc_std")
    assert (tmp_path / "summary_auroc.png").stat().st_size > 1000

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/metrics.jsonl")}
    broken = next(p.parent for p in stamps if "t1_exp2" in p.parent.name)
    (broken / "eval_test.json").unlink()  # this run must be evaluated again, which now fails

    def failing_eval(cfg, **_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("ttlx.evaluation.evaluate.evaluate_run", failing_eval)
    seen.clear()
    result = run_sweep(tiny_grid(), tmp_path, launch=launch)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no finished run trained again
    assert seen == ["done", "failed: RuntimeError: disk on fire"]
    assert len(result["failures"]) == 1 and "t1_exp2" in result["failures"][0]
    assert (tmp_path / "runs" / f"{broken.name}.error.txt").read_text().count("disk on fire") >= 1
    assert {row["point"]: row["repeats"] for row in result["rows"]} == {"t1": 1}


@pytest.mark.slow
def test_submitit_local_launcher_runs_jobs_in_their_own_process(tmp_path, fake_source, monkeypatch):
    tests_dir = str(Path(__file__).parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr("ttlx.sweeps.grid.run_one", __import__("sweep_job").tiny_job)
    monkeypatch.setattr(launchers, "run_one", __import__("sweep_job").tiny_job)
    grid = Grid(dataset="fake", model="tinynet", trunc=(1,), exp=(1,), base=TINY)
    options = launchers.SlurmOptions(timeout_min=10)

    def launch(specs):
        return launchers.launch_submitit(specs, 20, lambda *_: None, kind="submitit-local",
                                         folder=tmp_path / "submitit", options=options)

    result = run_sweep(grid, tmp_path / "sweep", launch=launch)
    assert result["failures"] == []
    (row,) = result["rows"]
    assert row["point"] == "t1" and row["repeats"] == 1 and 0.0 <= row["auroc"] <= 1.0
    assert math.isnan(row["auroc_std"])  # one repeat has no sample std
    assert list((tmp_path / "submitit").glob("*_result.pkl"))


def test_unknown_launcher_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="Unknown launcher 'pbs'; choose local, slurm or submitit-local."):
        launchers.make_executor("pbs", tmp_path, launchers.SlurmOptions())


@pytest.mark.slow
def test_probe_ranks_every_point_of_the_grid_and_the_summary_shows_it(tmp_path, fake_source):
    grid = Grid(dataset="fake", model="tinynet", trunc=(-1, 1), layerwise=(2,), exp=(1,), base=TINY)
    result = run_sweep(grid, tmp_path, launch=lambda specs: launchers.launch_local(specs, 20, lambda *_: None),
                       probe=True)
    ranking = json.loads((tmp_path / "probe.json").read_text())
    assert sorted((r["trunc"], r["layerwise"]) for r in ranking) == [(-1, False), (1, False), (2, True)]
    assert sorted(r["rank"] for r in ranking) == [1, 2, 3]
    scores = [r["probe_auroc"] for r in sorted(ranking, key=lambda r: r["rank"])]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= a <= 1.0 for a in scores)
    rows = {row["point"]: row for row in result["rows"]}
    assert set(rows) == {"full", "t1", "lw2"}
    by_point = {("full" if r["trunc"] == -1 else f"lw{r['trunc']}" if r["layerwise"] else f"t{r['trunc']}"): r
                for r in ranking}
    for point, row in rows.items():
        assert (row["probe_rank"], row["probe_auroc"]) == (by_point[point]["rank"], by_point[point]["probe_auroc"])
    assert "| probe AUROC | probe rank |" in (tmp_path / "summary.md").read_text()
