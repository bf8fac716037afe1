"""``ttlx prepare``: the digits default end to end, re-runs, and builds that are all or nothing."""

import csv
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.data.prepare import prepare_dataset
from ttlx.data.spec import Catalog, DatasetSpec, Example
from ttlx.data.store import load_prepared
from ttlx.errors import ConfigError, DataError
from ttlx.registry import datasets


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    prepare_dataset("digits", data_dir)
    return data_dir


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_digits_writes_three_leak_free_repeats_of_64_16_20(digits_dir):
    root = digits_dir / "digits"
    for exp in (1, 2, 3):
        parts = {s: _rows(root / "splits" / f"exp{exp}" / f"{s}.csv") for s in ("train", "val", "test")}
        ids = [r["id"] for rows in parts.values() for r in rows]
        assert len(ids) == len(set(ids)) == 1797
        assert len(parts["test"]) == pytest.approx(0.2 * 1797, abs=3)
        assert len(parts["val"]) == pytest.approx(0.16 * 1797, abs=3)
        assert set(parts["train"][0]) >= {"id", "label"}
        assert {r["label"] for r in parts["train"]} == {str(d) for d in range(10)}


def test_digits_labels_match_scikit_learn(digits_dir):
    from sklearn.datasets import load_digits

    target = load_digits().target
    rows = _rows(digits_dir / "digits" / "splits" / "exp1" / "test.csv")
    for row in rows[:50]:
        assert int(row["label"]) == target[int(row["id"].removeprefix("digit_"))]


def test_marker_records_seed_settings_and_sizes(digits_dir):
    meta = json.loads((digits_dir / "digits" / "prepared.json").read_text())
    assert meta["seed"] == 0 and meta["num_examples"] == 1797 and meta["channels"] == 1
    assert meta["settings"] == {
        "seed": 0,
        "max_size": 0,
        "on_bad_image": "stop",
        "splits_from": None,
        "options": {},
    }
    assert sum(meta["split_sizes"]["exp2"].values()) == 1797


def test_rerun_is_quick_and_changes_nothing(digits_dir):
    marker = digits_dir / "digits" / "prepared.json"
    before = {p: p.stat().st_mtime_ns for p in (digits_dir / "digits").rglob("*")}
    assert prepare_dataset("DIGITS", digits_dir) == digits_dir / "digits"
    assert {p: p.stat().st_mtime_ns for p in (digits_dir / "digits").rglob("*")} == before
    assert marker.is_file()


def test_rerun_with_other_settings_asks_for_force(digits_dir):
    with pytest.raises(DataError, match=r"already prepared .* with other settings \(seed\); pass --force"):
        prepare_dataset("digits", digits_dir, seed=1)


def test_unknown_option_and_bad_policy_are_config_errors(digits_dir):
    with pytest.raises(ConfigError, match="'digits' does not take --frontal-only; it takes no dataset options"):
        prepare_dataset("digits", digits_dir, frontal_only=True)
    with pytest.raises(ConfigError, match="--on-bad-image must be one of stop, skip, got 'ignore'"):
        prepare_dataset("digits", digits_dir, on_bad_image="ignore")
    with pytest.raises(ConfigError, match="Dataset 'digits' needs no downloaded files; leave out --manual-dir"):
        prepare_dataset("digits", digits_dir, digits_dir)


class _Flaky(DatasetSpec):
    """Images that raise KeyboardInterrupt from example ``fail_at`` on, like a Ctrl-C mid-build."""

    name = "flaky"
    encoding = "png"
    options = {"fail_at": -1}

    def scan(self, manual_dir=None, fail_at=-1):
        def image(i):
            def make():
                if 0 <= fail_at <= i:
                    raise KeyboardInterrupt
                return np.full((6, 6), i, np.uint8)

            return make

        return Catalog(("a", "b"), [Example(f"x{i}", i % 2, image(i)) for i in range(40)])


@pytest.fixture
def flaky():
    datasets.register("flaky", _Flaky())
    yield
    datasets.unregister("flaky")


def test_an_interrupted_build_leaves_nothing_that_looks_prepared(tmp_path, flaky):
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("flaky", tmp_path, fail_at=25)
    assert os.listdir(tmp_path) == []
    with pytest.raises(DataError, match="Dataset 'flaky' is not prepared in"):
        load_prepared("flaky", tmp_path)


def test_an_interrupted_rebuild_keeps_the_previous_dataset(tmp_path, flaky):
    prepare_dataset("flaky", tmp_path)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("flaky", tmp_path, fail_at=5, force=True)
    assert load_prepared("flaky", tmp_path).meta["num_examples"] == 40
    assert sorted(os.listdir(tmp_path)) == ["flaky"]


def test_leftovers_of_a_killed_build_are_removed(tmp_path, flaky):
    stale = tmp_path / ".flaky.partial-999999999-deadbeef"  # no such process
    (stale / "records").mkdir(parents=True)
    prepare_dataset("flaky", tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["flaky"]


def test_cli_prepare_prints_counts_per_class_and_split(tmp_path):
    result = CliRunner().invoke(app, ["prepare", "digits", "--data-dir", str(tmp_path)], terminal_width=120)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "digits" / "prepared.json").read_text())
    sizes = meta["split_sizes"]["exp1"]
    total_row = [line for line in result.output.splitlines() if "images" in line and "1797" in line]
    assert total_row and all(str(sizes[s]) in total_row[0] for s in ("train", "val", "test"))
    again = CliRunner().invoke(app, ["prepare", "digits", "--data-dir", str(tmp_path)], terminal_width=120)
    assert again.exit_code == 0 and total_row[0] in again.output


def test_cli_prepare_errors_exit_2_with_one_sentence(tmp_path):
    result = CliRunner().invoke(app, ["prepare", "nosuchset", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "Unknown dataset 'nosuchset'; choose one of:" in result.output
    assert "ham10000" in result.output and "digits" in result.output


def test_a_folder_that_prepare_did_not_make_is_never_replaced(tmp_path, flaky):
    (tmp_path / "flaky").mkdir()
    (tmp_path / "flaky" / "my_notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"flaky exists and is not a prepared dataset; move it away"):
        prepare_dataset("flaky", tmp_path)
    assert (tmp_path / "flaky" / "my_notes.txt").read_text() == "keep me"


def test_raw_files_inside_the_dataset_folder_are_refused(tmp_path, flaky):
    prepare_dataset("flaky", tmp_path)
    with pytest.raises(DataError, match=r"The manual dir .*flaky/raw is inside .*flaky, which prepare replaces"):
        prepare_dataset("flaky", tmp_path, tmp_path / "flaky" / "raw", force=True)
    assert load_prepared("flaky", tmp_path).meta["num_examples"] == 40
