"""The ``ttlx`` command itself: an instant ``--help`` that imports no JAX, and one-sentence errors."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ttlx import registry
from ttlx.cli import app

SUBCOMMANDS = ("models", "plugins", "weights", "prepare", "train", "eval", "analyze")
# what makes --help slow when imported (its time is a benchmark, RESULTS.md, never a timed test)
HEAVY = ("jax", "flax", "optax", "orbax", "grain", "tensorflow_datasets", "numpy", "ttlx.registry",
         "ttlx.models", "pydicom", "nibabel", "sklearn", "matplotlib")

HELP_AND_MODULES = f"""
import sys
sys.argv = ["ttlx", "--help"]
from ttlx.cli import main
try:
    main()
except SystemExit:
    pass
print("HEAVY:", sorted(m for m in sys.modules if m.startswith({HEAVY!r})))
"""


def test_help_lists_the_subcommands_and_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", HELP_AND_MODULES], capture_output=True, text=True,
                         check=True).stdout
    for name in SUBCOMMANDS:
        assert f" {name} " in out, name
    assert out.strip().endswith("HEAVY: []")


def run_cli(*args):
    return CliRunner().invoke(app, list(args))


def assert_one_sentence_error(result, message: str):
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"


def test_unknown_model_names_the_registered_ones():
    valid = ", ".join(registry.models.names())
    assert "resnet50" in valid and "densenet201" in valid
    assert_one_sentence_error(run_cli("analyze", "cost", "--model", "resnet5"),
                              f"Unknown model 'resnet5'; choose one of: {valid}.")


@pytest.mark.parametrize("args,message", [
    (("--trunc", "4"),
     "resnet50 has no block-wise truncation point 4; choose one of -1, 1, 2, 3 (or --layerwise with 0..16)."),
    (("--trunc", "17", "--layerwise"),
     "resnet50 has no layer-wise truncation point 17; choose a number of bottlenecks from 0 to 16."),
    (("--model", "densenet201", "--trunc", "99", "--layerwise"),
     "densenet201 has no layer-wise truncation point 99; choose a number of dense layers from 0 to 98."),
    (("--model", "layerttl_resnet50", "--trunc", "18"),
     "The layer-wise index 18 does not exist; the original layer-wise model takes -1 or 1..17 "
     "(k keeps k-1 units)."),
])
def test_truncation_points_out_of_range(args, message):
    assert_one_sentence_error(run_cli("analyze", "cost", *args), message)


def test_unknown_head_names_the_valid_heads():
    assert_one_sentence_error(run_cli("analyze", "cost", "--head", "avg"),
                              "Unknown head 'avg'; choose pool, flatten or none.")


def test_negative_repeats_and_tiny_images_are_refused():
    assert_one_sentence_error(run_cli("analyze", "cost", "--repeats", "-1"),
                              "--repeats must be 0 (no timing) or more, got -1.")
    assert_one_sentence_error(run_cli("models", "--image-size", "16"),
                              "--image-size 16 is too small; use at least 32 pixels.")
