"""`ttlx prepare folder|csv --name NAME`: a user's own datasets side by side, and refusals instead of silent reuse."""

import csv
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.data import pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.errors import ConfigError, DataError
from ttlx.registry import UnknownNameError


def _images(root, classes, per_class=10):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (10, 8), (30 * c + i, 40, 90)).save(root / name / f"img{i}.png")
    return root


@pytest.fixture
def two_folders(tmp_path):
    return _images(tmp_path / "imgs", ("cat", "dog")), _images(tmp_path / "imgs2", ("knee_ok", "knee_oa", "other"))


def test_a_second_folder_into_the_same_data_dir_is_refused_not_ignored(two_folders, tmp_path):
    first, second = two_folders
    data = tmp_path / "data"
    prepare_dataset("folder", data, first)
    with pytest.raises(DataError) as refused:
        prepare_dataset("folder", data, second)
    assert str(refused.value) == (
        f"Dataset 'folder' is already prepared in {data} from {first}, not {second}; "
        "pass another --name to keep both, or pass --force to replace it."
    )
    assert pipeline.dataset_info("folder", data).classes == ("cat", "dog")  # untouched
    prepare_dataset("folder", data, second, force=True)
    assert pipeline.dataset_info("folder", data).classes == ("knee_oa", "knee_ok", "other")


def test_a_named_dataset_sits_beside_the_first_and_opens_by_its_name(two_folders, tmp_path):
    first, second = two_folders
    data = tmp_path / "data"
    prepare_dataset("folder", data, first)
    root = prepare_dataset("folder", data, second, name="knee")
    assert root == data / "knee"
    meta = json.loads((root / "prepared.json").read_text())
    assert (meta["name"], meta["dataset"], meta["manual_dir"]) == ("knee", "folder", str(second))
    assert pipeline.dataset_info("knee", data).classes == ("knee_oa", "knee_ok", "other")
    assert pipeline.dataset_info("folder", data).classes == ("cat", "dog")
    ids = pipeline.split_ids("knee", data, exp=2, split="test")
    assert ids and all(i.split("/")[0] in ("knee_oa", "knee_ok", "other") for i in ids)
    # the same build again changes nothing; other options are refused by name
    stamp = (root / "prepared.json").stat().st_mtime_ns
    assert prepare_dataset("folder", data, second, name="knee") == root
    assert (root / "prepared.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match=r"'knee' is already prepared in .* with other settings \(--classes\); "
                                        r"pass another --name to keep both, or pass --force to rebuild it\."):
        prepare_dataset("folder", data, second, name="knee", classes="other,knee_ok,knee_oa")


def test_a_name_given_to_one_kind_of_dataset_is_refused_for_another(two_folders, tmp_path):
    first, _ = two_folders
    prepare_dataset("folder", tmp_path / "data", first, name="pets")
    with open(tmp_path / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *[[f"cat/img{i}.png", "cat"] for i in range(10)],
                                 *[[f"dog/img{i}.png", "dog"] for i in range(10)]])
    with pytest.raises(DataError, match=r"'pets' is already prepared in .* from 'folder', not 'csv'; pass another "
                                        r"--name to keep both, or pass --force to replace it\."):
        prepare_dataset("csv", tmp_path / "data", first, csv=tmp_path / "list.csv", name="pets")
    prepare_dataset("csv", tmp_path / "data", first, csv=tmp_path / "list.csv", name="pets_csv")
    assert pipeline.dataset_info("pets_csv", tmp_path / "data").classes == ("cat", "dog")


@pytest.mark.parametrize("name, message", [
    ("digits", "--name 'digits' is already the dataset 'digits'; choose another name."),
    ("HAM", "--name 'HAM' is already the dataset 'ham10000'; choose another name."),
    ("../up", "--name '../up' is not a usable name; use up to 64 letters"),
    ("", "--name '' is not a usable name"),
])
def test_names_that_collide_or_escape_are_refused(two_folders, tmp_path, name, message):
    with pytest.raises(ConfigError) as refused:
        prepare_dataset("folder", tmp_path / "data", two_folders[0], name=name)
    assert str(refused.value).startswith(message)
    assert not (tmp_path / "data").exists()


def test_only_own_data_takes_a_name(tmp_path):
    with pytest.raises(ConfigError, match=r"Dataset 'digits' takes no --name; only your own data"):
        prepare_dataset("digits", tmp_path, name="mydigits")


def test_an_unknown_dataset_lists_the_named_ones(two_folders, tmp_path):
    prepare_dataset("folder", tmp_path / "data", two_folders[1], name="knee")
    with pytest.raises(UnknownNameError, match=r"Unknown dataset 'kne'; choose one of: .*digits.*, or a name given "
                                               r"with `ttlx prepare folder\|csv\|volumes --name` in .* \(knee\)\."):
        pipeline.dataset_info("kne", tmp_path / "data")


@pytest.mark.slow
def test_train_and_eval_take_the_name_from_the_command_line(two_folders, tmp_path, tinynet):
    data, run = tmp_path / "data", tmp_path / "run"
    prepared = CliRunner().invoke(app, ["prepare", "folder", "--manual-dir", str(two_folders[1]), "--name", "knee",
                                        "--data-dir", str(data)])
    assert prepared.exit_code == 0, prepared.output
    again = CliRunner().invoke(app, ["prepare", "folder", "--manual-dir", str(two_folders[0]), "--name", "knee",
                                     "--data-dir", str(data)])
    assert again.exit_code == 2 and "pass another --name to keep both" in again.stderr
    trained = CliRunner().invoke(app, [
        "train", "--dataset", "knee", "--model", "tinynet", "--trunc", "-1", "--pretrained", "random",
        "--image-size", "32", "--bs", "4", "--max_epoch", "1", "--data-dir", str(data), "--workdir", str(run),
        "--no-progress", "--test", "--bootstrap", "0"])
    assert trained.exit_code == 0, trained.output
    evaluation = json.loads((run / "eval_test.json").read_text())
    assert len(evaluation["per_class"]) == 3
    assert CliRunner().invoke(app, ["eval", str(run), "--split", "val", "--bootstrap", "0"]).exit_code == 0
