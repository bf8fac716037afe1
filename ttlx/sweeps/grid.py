"""Grids of train+eval runs: expansion and checking of the grid, the sweep dir, and the launchers.

A grid names methods (``ftl``, ``ttl``, ``lwft``, ``tf``), their points, repeats (``exp``) and subsets
(``sub``); every other option is a :class:`TrainConfig` field shared by all runs. Each run is an ordinary
run dir under ``<sweep dir>/runs/`` named like ``ttlx train`` names it, so re-running a sweep skips
finished runs and resumes unfinished ones. The grid is saved as ``grid.json``; a sweep dir refuses a
different grid. Launchers call Python functions (never shell strings built from user input).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttlx.config import EvalConfig, TrainConfig
from ttlx.errors import ConfigError
from ttlx.methods import METHODS, overrides, run_label

GRID_FILE = "grid.json"
INT_LISTS = ("trunc", "layerwise", "freeze", "slim_from", "exp", "sub")  # grid keys holding integers


def _toml_value(value: Any) -> str:
    """A value as the grid file spells it: ``'x'`` for the string x, ``[1, 'a']`` for a list."""
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


@dataclass(frozen=True)
class Grid:
    """What a sweep varies and what it shares."""

    dataset: str
    model: str = "resnet50"
    methods: tuple[str, ...] = ("ttl",)
    trunc: tuple[int, ...] = (-1, 1, 2, 3)
    layerwise: tuple[int, ...] = ()
    freeze: tuple[int, ...] = (0, 1)
    slim_from: tuple[int, ...] = (3,)
    exp: tuple[int, ...] = (1, 2, 3)
    sub: tuple[int, ...] = (100,)
    pretrained: tuple[str, ...] = ()  # source domains compared (imagenet, chexpert, ...); () = base's one
    base: dict[str, Any] = field(default_factory=dict)  # other TrainConfig fields, the same for every run

    def __post_init__(self) -> None:
        """Check the types of a grid (a TOML file can hold anything); values are checked by :func:`expand`."""
        for key, example in (("dataset", "digits"), ("model", "resnet50")):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"The grid's {key} must be a name, e.g. {key} = \"{example}\"; got {value!r}.")
        if not isinstance(self.methods, tuple) or not all(isinstance(m, str) for m in self.methods):
            raise ConfigError(f"The grid's methods must be a list of names, e.g. methods = [\"ftl\", \"ttl\"]; "
                              f"got {_toml_value(self.methods)}.")
        if not isinstance(self.pretrained, tuple) or not all(isinstance(m, str) for m in self.pretrained):
            raise ConfigError(f"The grid's pretrained must be a list of sources, e.g. pretrained = [\"imagenet\", "
                              f"\"chexpert\"]; got {_toml_value(self.pretrained)}.")
        for key in INT_LISTS:
            value = getattr(self, key)
            if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"The grid's {key} must be a list of integers, e.g. {key} = [1, 2, 3]; "
                                  f"got {_toml_value(value)}.")
        if not isinstance(self.base, dict):
            raise ConfigError(f"The grid's base must be a table of `ttlx train` options, got {self.base!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: its method label and full training config."""

    method: str
    point: str
    config: TrainConfig


def grid_from_dict(data: dict[str, Any]) -> Grid:
    """A grid from a TOML/JSON mapping; unknown keys that are TrainConfig fields go to ``base``."""
    names = {f.name for f in dataclasses.fields(Grid)} - {"base"}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values, base = {}, dict(data.get("base", {}))
    for key, value in data.items():
        key = key.replace("-", "_")
        if key == "base":
            continue
        if key in names and not (key == "pretrained" and isinstance(value, str)):  # one source: shared
            one = (key == "methods" and isinstance(value, str)) or (key in INT_LISTS and isinstance(value, int))
            values[key] = tuple(value) if isinstance(value, list) else (value,) if one else value
        elif key in train_fields:
            base[key] = value
        else:
            raise ConfigError(f"Unknown grid key '{key}'; use one of {', '.join(sorted(names | train_fields))}.")
    if "dataset" not in values:
        raise ConfigError("The grid names no dataset; add dataset = \"...\".")
    return Grid(**values, base=base)


def load_grid_file(path: str | Path) -> Grid:
    """A grid from a TOML file (keys as :class:`Grid` fields plus shared :class:`TrainConfig` options)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Grid file {path} does not exist; give the path of a TOML grid file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML ({err}); fix the file.") from None
    return grid_from_dict(data)


def expand(grid: Grid) -> list[RunSpec]:
    """Every run of the grid, checked against the model before any run starts."""
    from ttlx.models import get_architecture

    unknown = [m for m in grid.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"Unknown method '{unknown[0]}' in the grid; choose from {', '.join(METHODS)}.")
    arch = get_architecture(grid.model)
    points = method_points(grid, arch)
    specs = []
    for method, point, values_of_point in points:
        for source in grid.pretrained or (None,):  # source domains: one run of each point per source
            for exp in grid.exp:
                for sub in grid.sub:
                    values = {**grid.base, "dataset": grid.dataset, "model": grid.model, "exp": exp, "sub": sub,
                              **values_of_point, **({"pretrained": source} if source else {})}
                    specs.append(RunSpec(method, point, TrainConfig(**values)))
    if not specs:
        raise ConfigError("The grid holds no runs; give at least one method with a point, one exp and one sub.")
    return specs


def method_points(grid: Grid, arch) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, point label, TrainConfig overrides) for every method and point of the grid, labelled as the
    summary labels the runs (``ttlx.methods``)."""
    chosen = []
    for method in grid.methods:
        if method == "ftl":
            chosen.append(overrides("ftl"))
        elif method == "ttl":
            chosen += [overrides("ttl", _check_block(arch, t)) for t in grid.trunc]
            chosen += [overrides("ttl", _check_layer(arch, n), layerwise=True) for n in grid.layerwise]
        elif method == "lwft":
            chosen += [overrides("lwft", _check_freeze(arch, k)) for k in grid.freeze]
        elif method == "tf":
            chosen += [overrides("tf", _check_slim(arch, s)) for s in grid.slim_from]
    return [(*run_label(values)[:2], values) for values in chosen]


def _check_block(arch, point: int) -> int:
    if point not in arch.block_points:
        valid = ", ".join(str(p) for p in arch.block_points)
        raise ConfigError(f"The grid names truncation point {point}, which {arch.name} lacks; use {valid}.")
    return point


def _check_layer(arch, point: int) -> int:
    if point not in arch.layer_points():
        raise ConfigError(f"The grid names layer-wise point {point}, which {arch.name} lacks; use 0..{arch.num_units}.")
    return point


def _check_freeze(arch, k: int) -> int:
    valid = [0, *(p for p in arch.block_points if p > 0)]
    if k not in valid:
        raise ConfigError(f"The grid freezes up to block {k}, which {arch.name} lacks; use one of "
                          f"{', '.join(str(v) for v in valid)}.")
    return k


def _check_slim(arch, stage: int) -> int:
    if not arch.slim_stages:
        raise ConfigError(f"{arch.name} has no stages the TF baseline can slim; leave tf out of the grid's methods.")
    if stage not in arch.slim_stages:
        valid = ", ".join(str(s) for s in arch.slim_stages)
        raise ConfigError(f"The grid slims from stage {stage}, which {arch.name} lacks; use {valid}.")
    return stage


def _results_part(grid: dict) -> dict:
    """A saved grid without ``base.num_workers``: batches do not depend on the loader's worker count, so a
    sweep may go on with another one (as a resumed run may)."""
    return {**grid, "base": {k: v for k, v in grid.get("base", {}).items() if k != "num_workers"}}


def open_sweep_dir(path: Path, grid: Grid) -> None:
    """Create the sweep dir with its grid, or check that an existing one holds the same grid."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file, not a sweep dir; choose another --out.")
    record = path / GRID_FILE
    wanted = json.loads(json.dumps(grid.to_dict()))  # tuples become lists, as in the saved file
    if record.is_file():
        saved = json.loads(record.read_text())
        saved, compared = _results_part(saved), _results_part(wanted)
        if saved != compared:
            changed = sorted(k for k in set(saved) | set(compared) if saved.get(k) != compared.get(k))
            raise ConfigError(f"{path} holds a sweep of another grid (differs in {', '.join(changed)}); "
                              "results of two grids would mix, so choose another --out.")
        return
    path.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")


def place_runs(specs: list[RunSpec], sweep_dir: Path) -> list[RunSpec]:
    """Point every run's workdir into ``<sweep dir>/runs/`` with the name ``ttlx train`` would give it."""
    from ttlx import data as data_layer
    from ttlx.runs.run_dir import run_name
    from ttlx.training.loop import resolve_model
    from ttlx.training.volume_input import check_input_kind

    data, infos = data_layer.data_source(), {}
    placed = []
    for spec in specs:  # one grid, one dataset: its info is read once
        key = (spec.config.dataset, spec.config.data_dir)
        if key not in infos:
            infos[key] = data.dataset_info(*key)
        arch, model_cfg = resolve_model(spec.config, len(infos[key].classes))
        check_input_kind(arch, infos[key], spec.config.window)  # a 3D network on images: before any run
        workdir = sweep_dir / "runs" / run_name(spec.config, model_cfg)
        placed.append(dataclasses.replace(spec, config=dataclasses.replace(spec.config, workdir=str(workdir))))
    return placed


def run_one(config: dict[str, Any], bootstrap: int = 1000) -> dict[str, Any]:
    """Train (or resume) one run and evaluate it on test; skip what is already done. Picklable for submitit."""
    from ttlx.evaluation.evaluate import evaluate_run
    from ttlx.runs.run_dir import RunDir
    from ttlx.training.loop import train

    cfg = TrainConfig.from_dict(config)
    run = RunDir(cfg.workdir)
    if not run.finished():
        train(cfg, progress=False)
    if not (run.path / "eval_test.json").is_file():
        evaluate_run(EvalConfig(run_dir=str(run.path), bootstrap=bootstrap), show=False)
    return {"run_dir": str(run.path), "status": "done"}


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """``"-1,1,2,3"`` or ``"0..16"`` (inclusive) or a mix, as a tuple of ints."""
    values: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            if ".." in part:
                low, high = (int(v) for v in part.split(".."))
                values.extend(range(low, high + 1))
            else:
                values.append(int(part))
        except ValueError:
            raise ConfigError(f"{option} takes integers like 1,2,3 or 0..16, not '{part}'.") from None
    return tuple(values)


def run_sweep(grid: Grid, out: str | Path, *, launch, probe: bool = False, report=None) -> dict[str, Any]:
    """Check the grid, run what is not done yet through ``launch(specs)``, and write the summary."""
    from ttlx.sweeps.summary import write_summary

    sweep_dir = Path(out)
    specs = expand(grid)  # the grid against the model and every run's options
    specs = place_runs(specs, sweep_dir)  # the dataset: known and prepared; nothing is written before this
    open_sweep_dir(sweep_dir, grid)
    if probe:
        write_probe_ranking(grid, sweep_dir)
    failures = launch(specs)
    rows = write_summary(sweep_dir)
    return {"sweep_dir": str(sweep_dir), "runs": len(specs), "failures": failures, "rows": rows}


def write_probe_ranking(grid: Grid, sweep_dir: Path) -> list[dict[str, Any]]:
    """Rank the grid's block-wise and layer-wise points with linear probes (``probe.json``)."""
    from ttlx import data as data_layer
    from ttlx.analysis.probe import probe_dataset, write_probe

    base = grid.base
    options = dict(data_dir=base.get("data_dir"), exp=grid.exp[0], sub=grid.sub[0],
                   image_size=base.get("image_size", 224), seed=base.get("seed", 0), window=base.get("window"))
    pretrained = (grid.pretrained or (base.get("pretrained", "imagenet"),))[0]  # the first source's features
    # one pass over the data for every point: block-wise and layer-wise points share the deepest backbone
    rows = probe_dataset(grid.dataset, grid.model, pretrained, points=list(grid.trunc),
                         layerwise_points=list(grid.layerwise), data=data_layer.data_source(), **options)
    rows.sort(key=lambda r: -r["probe_auroc"] if r["probe_auroc"] == r["probe_auroc"] else math.inf)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    write_probe(rows, sweep_dir)
    return rows
