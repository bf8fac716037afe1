"""Hostile options: every documented flag of `ttlx train`, `eval`, `sweep`, `analyze cost` and `prepare`
given an out-of-range or wrong-type value exits with code 2 and one sentence naming the flag and what it
takes, and nothing is left behind: no run dir, no sweep dir, no prepared (or half-prepared) dataset.

The commands run on real prepared digits with the tiny test network, so a value that slipped through
would start a real run and leave its run dir behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.config import SPLIT_REPEATS, EvalConfig, ModelConfig, TrainConfig
from ttlx.errors import ConfigError
from ttlx.sweeps.grid import Grid, grid_from_dict

BOOTSTRAP = "--bootstrap must be 0 (no intervals) or a number of resamples, got -1."
FACTOR = "--factor must be between 0 and 1 (it multiplies the learning rate on a plateau), got {}."
SEED = "--seed must be from 0 to 4294967295, got -1."
IMAGE = "--image-size 8 is too small; use at least 32 pixels."


@pytest.fixture
def place(tmp_path, monkeypatch):
    """Run in an empty folder with the runs dir and weights cache inside it, so anything written shows."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TTLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(result, message: str) -> None:
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n"), result.output


def assert_wrong_type(result, flag: str, kind: str) -> None:
    """A value of the wrong type: typer's sentence, on one line, naming the flag and the type it takes."""
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert re.fullmatch(rf"Error: Invalid value for '{flag}'[^\n]*: [^\n]*\b{kind}\b[^\n]*\.\n", result.stderr), (
        result.stderr)


def nothing_written(place: Path) -> list[str]:
    """What the command left in the test's folder (the data dir of these tests lives elsewhere)."""
    return sorted(str(p.relative_to(place)) for p in place.rglob("*"))


# ---------------------------------------------------------------------------------------------------
# ttlx train
# ---------------------------------------------------------------------------------------------------
TRAIN_CASES = [
    (("--lr", "0"), "--lr must be a positive number, got 0."),
    (("--lr", "-1"), "--lr must be a positive number, got -1."),
    (("--lr", "nan"), "--lr must be a positive number, got nan."),
    (("--lr", "inf"), "--lr must be a positive number, got inf."),
    (("--lr", "1e-7"), "--min-lr 1e-06 is above --lr 1e-07, so training would stop before its first epoch; "
                       "choose a lower --min-lr or a higher --lr."),
    (("--bs", "0"), "--bs must be at least 1, got 0."),
    (("--batch-size", "-8"), "--bs must be at least 1, got -8."),
    (("--max-epoch", "0"), "--max-epoch must be at least 1, got 0."),
    (("--max_epoch", "-3"), "--max-epoch must be at least 1, got -3."),
    (("--factor", "1.5"), FACTOR.format("1.5")),
    (("--factor", "1"), FACTOR.format("1")),
    (("--factor", "0"), FACTOR.format("0")),
    (("--patience", "-1"), "--patience must be at least 0, got -1."),
    (("--min-lr", "-1"), "--min-lr must be 0 or a positive number, got -1."),
    (("--weight-decay", "-1"), "--weight-decay must be 0 or a positive number, got -1."),
    (("--ptl-decay", "0"), "--ptl-decay must be a positive number, got 0."),
    (("--ptl_decay", "-10"), "--ptl-decay must be a positive number, got -10."),
    (("--slim-factor", "0"), "--slim-factor must be at least 1, got 0."),
    (("--slim-from", "-1"), "--slim-from must be at least 0, got -1."),
    (("--slim-from", "7"), "tinynet cannot be slimmed from stage 7; choose 0, 1, 2."),
    (("--num-workers", "-1"), "--num-workers must be at least 0, got -1."),
    (("--num_workers", "-2"), "--num-workers must be at least 0, got -2."),
    (("--sub", "0"), "--sub must be a percentage in 1..100, got 0."),
    (("--sub", "101"), "--sub must be a percentage in 1..100, got 101."),
    (("--exp", "0"), "--exp must be one of 1, 2, 3, got 0."),
    (("--exp", "4"), "--exp must be one of 1, 2, 3, got 4."),
    (("--image-size", "8"), IMAGE),
    (("--dtype", "float16x"), "--dtype must be one of float32, bfloat16, got 'float16x'."),
    (("--seed", "-1"), SEED),
    (("--seed", str(2**32)), "--seed must be from 0 to 4294967295, got 4294967296."),
    (("--head", "bogus"), "--head must be one of pool, flatten, got 'bogus'."),
    (("--head", "none"), "Training needs a classifier head; choose --head pool or --head flatten."),
    (("--trunc", "7"), "tinynet has no block-wise truncation point 7; choose one of -1, 1, 2 (or --layerwise "
                       "with 0..4)."),
    (("--trunc", "5", "--layerwise"), "tinynet has no layer-wise truncation point 5; choose a number of units "
                                      "from 0 to 4."),
    (("--freeze-until", "-1"), "--freeze-until must be at least 0, got -1."),
    (("--freeze-until", "9"), "--freeze-until 9 does not fit tinynet truncated at -1; choose one of 0, 1, 2 "
                              "(0 freezes the stem only)."),
    (("--trunc", "1", "--freeze-until", "2"), "--freeze-until 2 does not fit tinynet truncated at 1; choose one "
                                              "of 0, 1 (0 freezes the stem only)."),
    (("--pretrained", "bogus"), "Unknown pretrained source 'bogus' for tinynet; choose random, a "
                                ".safetensors/.pth file or a ttlx run dir."),
    (("--test", "--bootstrap", "-1"), BOOTSTRAP),
    (("--bootstrap", "-1"), BOOTSTRAP),
]


def train_args(digits_dir, place):
    return ["train", "--dataset", "digits", "--model", "tinynet", "--pretrained", "random", "--head", "pool",
            "--image-size", "32", "--max-epoch", "1", "--data-dir", digits_dir, "--workdir", place / "run",
            "--no-progress"]


@pytest.mark.parametrize("args,message", TRAIN_CASES, ids=[" ".join(args) for args, _ in TRAIN_CASES])
def test_train_refuses_an_out_of_range_flag_before_a_run_dir_exists(args, message, digits_dir, place, tinynet):
    assert_refused(run_cli(*train_args(digits_dir, place), *args), message)
    assert nothing_written(place) == []


@pytest.mark.parametrize("flag,value,kind", [
    ("--lr", "abc", "number"), ("--bs", "1.5", "integer"), ("--max-epoch", "ten", "integer"),
    ("--exp", "one", "integer"), ("--sub", "50%", "integer"), ("--seed", "0x10", "integer"),
    ("--factor", "half", "number"), ("--image-size", "32px", "integer"), ("--freeze-until", "all", "integer"),
    ("--num-workers", "many", "integer"),
])
def test_train_refuses_a_value_of_the_wrong_type(flag, value, kind, digits_dir, place, tinynet):
    assert_wrong_type(run_cli(*train_args(digits_dir, place), flag, value), flag, kind)
    assert nothing_written(place) == []


def test_usage_errors_are_one_sentence_too(place):
    assert_refused(run_cli("train", "--lrr", "1"), "No such option: --lrr (Possible options: --lr, --min-lr).")
    assert_refused(run_cli("weights", "convert", "tinynet"), "Missing argument 'file'.")
    assert_refused(run_cli("frobnicate"), "No such command 'frobnicate'.")
    assert nothing_written(place) == []


# ---------------------------------------------------------------------------------------------------
# ttlx eval, ttlx analyze cost
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (("--split", "bogus"), "Unknown split 'bogus'; choose one of train, val, test."),
    (("--checkpoint", "middle"), "Unknown checkpoint 'middle'; choose best or latest."),
    (("--bootstrap", "-1"), BOOTSTRAP),
])
def test_eval_checks_its_flags_before_reading_the_run_dir(args, message, place):
    # the run dir does not exist: a flag that slipped through would say so instead
    assert_refused(run_cli("eval", place / "run", *args), message)
    assert nothing_written(place) == []


def test_eval_refuses_wrong_types(place):
    assert_wrong_type(run_cli("eval", place / "run", "--bootstrap", "many"), "--bootstrap", "integer")
    assert nothing_written(place) == []


@pytest.mark.parametrize("args,message", [
    (("--classes", "0"), "--classes must be at least 1 for a pool head, got 0."),
    (("--classes", "-1", "--head", "none"), "--classes must be at least 0, got -1."),
    (("--slim-factor", "0"), "--slim-factor must be at least 1, got 0."),
    (("--slim-from", "7"), "tinynet cannot be slimmed from stage 7; choose 0, 1, 2."),
    (("--image-size", "8"), IMAGE),
    (("--head", "bogus"), "Unknown head 'bogus'; choose pool, flatten or none."),
    (("--trunc", "3"), "tinynet has no block-wise truncation point 3; choose one of -1, 1, 2 (or --layerwise "
                       "with 0..4)."),
    (("--repeats", "-1"), "--repeats must be 0 (no timing) or more, got -1."),
])
def test_analyze_cost_refuses_out_of_range_flags(args, message, place, tinynet):
    assert_refused(run_cli("analyze", "cost", "--model", "tinynet", "--repeats", "0", *args), message)
    assert nothing_written(place) == []


def test_analyze_cost_refuses_wrong_types(place, tinynet):
    assert_wrong_type(run_cli("analyze", "cost", "--model", "tinynet", "--classes", "two"), "--classes", "integer")
    assert_wrong_type(run_cli("analyze", "cost", "--model", "tinynet", "--trunc", "last"), "--trunc", "integer")


# ---------------------------------------------------------------------------------------------------
# ttlx prepare
# ---------------------------------------------------------------------------------------------------
SCANNED = "synthetic needs --count of at least 30 and --size of at least 8."
UNCERTAIN = "--uncertain must be one of ones, zeros, ignore, got 'bogus'."


@pytest.mark.parametrize("args,message", [
    (("synthetic", "--seed", "-1"), SEED),
    (("synthetic", "--max-size", "-1"), "--max-size must be 0 (keep the images' size) or a number of pixels, "
                                         "got -1."),
    (("synthetic", "--on-bad-image", "bogus"), "--on-bad-image must be one of stop, skip, got 'bogus'."),
    (("synthetic", "--count", "0"), SCANNED),
    (("synthetic", "--size", "4"), SCANNED),
    (("synthetic", "--uncertain", "ones"), "Dataset 'synthetic' does not take --uncertain; it takes --count, "
                                           "--size."),
    (("chexpert", "--uncertain", "bogus"), UNCERTAIN),
    (("digits", "--manual-dir", "somewhere"), "Dataset 'digits' needs no downloaded files; leave out --manual-dir."),
])
def test_prepare_refuses_bad_flags_and_leaves_no_dataset(args, message, place):
    assert_refused(run_cli("prepare", *args, "--data-dir", place / "data"), message)
    # no dataset, no hidden partial build, not even the data dir: options are checked (some while scanning)
    # before anything is created
    assert nothing_written(place) == []


def test_prepare_refuses_wrong_types(place):
    assert_wrong_type(run_cli("prepare", "synthetic", "--data-dir", place / "data", "--count", "lots"), "--count",
                      "integer")
    assert nothing_written(place) == []


# ---------------------------------------------------------------------------------------------------
# ttlx sweep (flags and grid files)
# ---------------------------------------------------------------------------------------------------
SWEEP_CASES = [
    (("--exp", "0"), "--exp must be one of 1, 2, 3, got 0."),
    (("--exp", ""), "The grid holds no runs; give at least one method with a point, one exp and one sub."),
    (("--sub", "101"), "--sub must be a percentage in 1..100, got 101."),
    (("--bs", "0"), "--bs must be at least 1, got 0."),
    (("--lr", "0"), "--lr must be a positive number, got 0."),
    (("--max-epoch", "0"), "--max-epoch must be at least 1, got 0."),
    (("--num-workers", "-1"), "--num-workers must be at least 0, got -1."),
    (("--image-size", "8"), IMAGE),
    (("--seed", "-1"), SEED),
    (("--head", "bogus"), "--head must be one of pool, flatten, got 'bogus'."),
    (("--bootstrap", "-1"), BOOTSTRAP),
    (("--method", "bogus"), "Unknown method 'bogus' in the grid; choose from ftl, ttl, lwft, tf."),
    (("--trunc", "7"), "The grid names truncation point 7, which tinynet lacks; use -1, 1, 2."),
    (("--trunc", "x"), "--trunc takes integers like 1,2,3 or 0..16, not 'x'."),
    (("--layerwise", "9"), "The grid names layer-wise point 9, which tinynet lacks; use 0..4."),
    (("--method", "lwft", "--freeze", "9"), "The grid freezes up to block 9, which tinynet lacks; use one of 0, 1, 2."),
    (("--method", "tf", "--slim-from", "7"), "The grid slims from stage 7, which tinynet lacks; use 0, 1, 2."),
    (("--launcher", "bogus"), "Unknown launcher 'bogus'; choose local, slurm or submitit-local."),
    (("--gpus", "-1"), "--gpus must be at least 0, got -1."),
    (("--time", "0"), "--time must be at least 1 (minutes), got 0."),
    (("--array-parallelism", "0"), "--array-parallelism must be at least 1, got 0."),
    (("--partition", "gpu queue"), "--partition takes a SLURM name (letters, digits and . _ , + -), got 'gpu queue'."),
]


def sweep_args(digits_dir, place):
    return ["sweep", "--dataset", "digits", "--model", "tinynet", "--trunc", "1", "--exp", "1", "--pretrained",
            "random", "--head", "pool", "--image-size", "32", "--max-epoch", "1", "--data-dir", digits_dir,
            "--out", place / "sweep"]


@pytest.mark.parametrize("args,message", SWEEP_CASES, ids=[" ".join(args) for args, _ in SWEEP_CASES])
def test_sweep_refuses_a_bad_flag_before_the_sweep_dir_exists(args, message, digits_dir, place, tinynet):
    assert_refused(run_cli(*sweep_args(digits_dir, place), *args), message)
    assert nothing_written(place) == []


def test_sweep_refuses_wrong_types_and_an_unprepared_dataset(place, tinynet):
    assert_wrong_type(run_cli("sweep", "--dataset", "digits", "--gpus", "all"), "--gpus", "integer")
    assert_wrong_type(run_cli("sweep", "--dataset", "digits", "--lr", "fast"), "--lr", "number")
    result = run_cli("sweep", "--dataset", "digits", "--model", "tinynet", "--trunc", "1", "--head", "pool",
                     "--image-size", "32", "--data-dir", place / "nodata", "--out", place / "sweep")
    assert result.exit_code == 2 and "ttlx prepare digits" in result.stderr, result.output
    assert nothing_written(place) == []  # the sweep dir is made only once the dataset is found


GRID = """dataset = "digits"
model = "tinynet"
trunc = [1]
exp = [1]
pretrained = "random"
head = "pool"
image_size = 32
max_epoch = 1
"""


@pytest.mark.parametrize("line,message", [
    ('trunc = "x"', "The grid's trunc must be a list of integers, e.g. trunc = [1, 2, 3]; got 'x'."),
    ("exp = [0]", "--exp must be one of 1, 2, 3, got 0."),
    ('exp = [1, "a"]', "The grid's exp must be a list of integers, e.g. exp = [1, 2, 3]; got [1, 'a']."),
    ("sub = [1.5]", "The grid's sub must be a list of integers, e.g. sub = [1, 2, 3]; got [1.5]."),
    ("layerwise = [9]", "The grid names layer-wise point 9, which tinynet lacks; use 0..4."),
    ("methods = [1]", "The grid's methods must be a list of names, e.g. methods = [\"ftl\", \"ttl\"]; got [1]."),
    ("dataset = 3", "The grid's dataset must be a name, e.g. dataset = \"digits\"; got 3."),
    ('lr = "abc"', "--lr takes a number, got 'abc'."),
    ("max_epoch = 0", "--max-epoch must be at least 1, got 0."),
    ("max_epoch = 2.5", "--max-epoch takes an integer, got 2.5."),
    ("batch_size = -1", "--bs must be at least 1, got -1."),
    ("seed = -1", SEED),
    ('dtype = "float16x"', "--dtype must be one of float32, bfloat16, got 'float16x'."),
    ("class_weighted = 1", "--class-weights is on or off (true or false), got 1."),
    ('colour = "red"', None),  # an unknown key: the message lists every valid key
])
def test_a_grid_file_with_wrong_types_or_values_is_refused(line, message, digits_dir, place, tinynet):
    grid = place.parent / f"{place.name}.toml"  # outside the watched folder
    keys = {entry.split("=")[0].strip() for entry in line.splitlines()}
    kept = [entry for entry in GRID.splitlines() if entry.split("=")[0].strip() not in keys]
    grid.write_text("\n".join([*kept, f'data_dir = "{digits_dir}"', line]) + "\n")
    result = run_cli("sweep", "--grid", grid, "--out", place / "sweep")
    if message is None:
        assert result.exit_code == 2 and result.stderr.startswith("Error: Unknown grid key 'colour'; use one of ")
    else:
        assert_refused(result, message)
    assert nothing_written(place) == []


def test_a_single_integer_or_method_in_a_grid_file_is_a_one_item_list():
    grid = grid_from_dict({"dataset": "digits", "trunc": 2, "exp": 3, "methods": "ftl"})
    assert (grid.trunc, grid.exp, grid.methods) == ((2,), (3,), ("ftl",))
    with pytest.raises(ConfigError, match=r"^The grid's freeze must be a list of integers"):
        Grid(dataset="digits", freeze=(True,))


# ---------------------------------------------------------------------------------------------------
# the checks live in the library: configs refuse bad values when they are made
# ---------------------------------------------------------------------------------------------------
def test_configs_check_their_values_when_made():
    with pytest.raises(ConfigError, match=r"^--lr must be a positive number, got 0\.$"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match=r"^--workdir takes a name or path, got 3\.$"):
        TrainConfig(workdir=3)
    with pytest.raises(ConfigError, match=r"^--slim-factor must be at least 1, got 0\.$"):
        ModelConfig(slim_factor=0)
    with pytest.raises(ConfigError, match=r"^--dtype must be one of float32, bfloat16, got 'float64'\.$"):
        ModelConfig(dtype="float64")
    with pytest.raises(ConfigError, match=r"^--bs must be at least 1, got 0\.$"):
        EvalConfig(run_dir="run", batch_size=0)
    # a saved config is checked the same way when it is read back
    with pytest.raises(ConfigError, match=r"^--sub must be a percentage in 1\.\.100, got 0\.$"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "sub": 0})
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    # numpy scalars are taken as the plain numbers they hold
    import numpy as np

    assert type(TrainConfig(trunc=np.int64(2)).trunc) is int and ModelConfig(num_classes=np.int32(3)).num_classes == 3


def test_the_config_checks_use_the_data_layers_split_names():
    from ttlx import config
    from ttlx.data.splits import REPEATS, SPLITS

    assert SPLIT_REPEATS is REPEATS and config.SPLITS is SPLITS


@pytest.mark.parametrize("model,largest", [("resnet50", 64), ("densenet201", 32)])
def test_a_slim_factor_that_leaves_no_channels_is_refused(model, largest):
    from ttlx.models import resolve_config

    resolve_config(model, -1, slim_from=0, slim_factor=largest)  # one channel per slimmed layer still builds
    with pytest.raises(ConfigError, match=rf"^--slim-factor {largest + 1} leaves {model}'s slimmed layers without "
                                          rf"channels; choose 1\.\.{largest}\.$"):
        resolve_config(model, -1, slim_from=3, slim_factor=largest + 1)
