"""`ttlx predict RUN_DIR FILES`: image files stored as the run's dataset stored its images, then scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ttlx.cli import app
from ttlx.data.stored_form import StoredForm
from ttlx.errors import ConfigError, DataError
from ttlx.evaluation.predict import predict_files
from ttlx.runs.predictions import read_predictions


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory, tinynet):
    """A one-epoch tinynet run on the prepared digits, evaluated on its test split."""
    workdir = tmp_path_factory.mktemp("predict") / "run"
    done = run_cli("train", "--dataset", "digits", "--model", "tinynet", "--trunc", "-1", "--pretrained", "random",
                   "--pooling", "--image-size", "32", "--bs", "64", "--max-epoch", "1", "--lr", "3e-3",
                   "--data-dir", digits_dir, "--workdir", workdir, "--no-progress", "--test", "--bootstrap", "0")
    assert done.exit_code == 0, done.output
    return workdir


def stored_test_images(digits_dir, folder, count: int) -> dict[str, object]:
    """The first ``count`` test images of exp 1 written as files, exactly as prepare stored them (PNG)."""
    from ttlx.data.pipeline import _prepared
    from ttlx.data.records import RecordReader
    from ttlx.data.split_files import split_positions

    prepared = _prepared("digits", digits_dir)
    reader = RecordReader(prepared.records_dir)
    folder.mkdir()
    files = {}
    for record in split_positions(prepared, exp=1, split="test")[:count]:
        data, _, example_id = reader.read(int(record))
        path = folder / f"{example_id}.png"
        path.write_bytes(data)
        files[example_id] = path
    return files


@pytest.mark.slow
def test_files_get_the_probabilities_the_evaluation_gave_the_same_images(digits_run, digits_dir, tmp_path):
    saved = json.loads((digits_run / "config.json").read_text())
    assert saved["dataset"]["stored"] == {"channels": 1, "encoding": "png", "max_size": 0, "pad_square": False}
    files = stored_test_images(digits_dir, tmp_path / "scans", 11)
    (tmp_path / "scans" / "notes.txt").write_text("not an image, and not searched for")
    path, summary = predict_files(digits_run, [tmp_path / "scans"], batch_size=4)  # 3 batches, the last padded
    assert path == digits_run / "predictions_files.csv" and summary["files"] == 11
    rows = read_predictions(path)
    assert list(rows["file"]) == [str(p) for p in sorted(files.values())]
    evaluated = read_predictions(digits_run / "predictions_test.csv")
    where = {example_id: i for i, example_id in enumerate(evaluated["id"])}
    classes = [str(c) for c in range(10)]
    ours = np.stack([rows[f"prob_{c}"] for c in classes], 1)
    theirs = np.stack([evaluated[f"prob_{c}"] for c in classes], 1)[[where[p.stem] for p in sorted(files.values())]]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert list(rows["predicted"]) == [classes[i] for i in ours.argmax(axis=1)]
    assert sum(summary["predicted"].values()) == 11


def test_predict_from_the_command_line_and_its_refusals(digits_run, tmp_path):
    scan = tmp_path / "scan.jpg"
    Image.fromarray((np.random.default_rng(0).random((30, 20, 3)) * 255).astype(np.uint8)).save(scan)
    out = tmp_path / "out.csv"
    done = run_cli("predict", digits_run, scan, "--out", out, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["files"] == 1 and len(read_predictions(out)["file"]) == 1
    shown = run_cli("predict", digits_run, scan, "--out", out)
    assert shown.exit_code == 0 and f"Wrote {out}" in shown.stdout and "1 file(s); predicted: " in shown.stdout
    out.unlink()
    missing = run_cli("predict", digits_run, scan, tmp_path / "gone.png", "--out", out)
    assert missing.exit_code == 2
    assert f"The image {tmp_path / 'gone.png'} does not exist (1 of the 2 files are missing)" in missing.stderr
    (tmp_path / "text.png").write_text("not an image")
    broken = run_cli("predict", digits_run, scan, tmp_path / "text.png", "--out", out)
    assert broken.exit_code == 2 and "text.png is not a readable image (" in broken.stderr
    assert not out.exists()  # nothing half-written
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no image files \(\.jpg, \.jpeg, \.png"):
        predict_files(digits_run, [tmp_path / "empty"])
    with pytest.raises(ConfigError, match=r"--bs"):
        predict_files(digits_run, [scan], batch_size=0)
    with pytest.raises(ConfigError, match=r"^The folder of --out .*nowhere/p.csv does not exist; create it or choose "
                                          r"another path\.$"):
        predict_files(digits_run, [scan], out=tmp_path / "nowhere" / "p.csv")


def test_a_run_that_does_not_record_its_stored_form_needs_the_prepared_data(digits_run, digits_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(digits_run, old)
    config = json.loads((old / "config.json").read_text())
    del config["dataset"]["stored"]  # as runs trained before ttlx recorded it
    config["train"]["data_dir"] = str(tmp_path / "moved")
    (old / "config.json").write_text(json.dumps(config))
    scan = tmp_path / "scan.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scan)
    with pytest.raises(DataError, match=r"does not record how its dataset stored the images, and the prepared "
                                        r"dataset is not at hand .*; pass --data-dir with the prepared 'digits'\.$"):
        predict_files(old, [scan])
    path, _ = predict_files(old, [scan], data_dir=digits_dir)
    assert len(read_predictions(path)["file"]) == 1


def test_a_stored_form_pads_shrinks_and_converts_as_prepare_does(tmp_path):
    from io import BytesIO

    photo = tmp_path / "lesion.jpg"
    Image.fromarray(np.full((45, 60, 3), (200, 30, 30), np.uint8)).save(photo, quality=95)
    padded = Image.open(BytesIO(StoredForm(3, "png", 32, True).store(photo)))
    assert padded.size == (32, 32) and padded.mode == "RGB"
    pixels = np.asarray(padded)
    assert (pixels[0] == 255).all() and (pixels[-1] == 255).all()  # white bands above and below the photo
    assert abs(int(pixels[16, 16, 0]) - 200) < 8 and pixels[16, 16, 1] < 40
    gray = Image.open(BytesIO(StoredForm(1, "jpeg", 0, False).store(photo)))
    assert gray.size == (60, 45) and gray.mode == "L" and gray.format == "JPEG"
    # datasets prepared before prepared.json recorded pad_square take their spec's
    meta = {"name": "ham10000", "channels": 3, "encoding": "jpeg", "settings": {"max_size": 256}}
    assert StoredForm.of_prepared(meta) == StoredForm(3, "jpeg", 256, True)
    assert StoredForm.of_prepared({**meta, "pad_square": False}).pad_square is False


def test_file_predictions_of_a_multilabel_run_hold_a_probability_per_finding(tmp_path):
    from ttlx.runs.predictions import write_file_predictions

    probs = np.array([[0.9, 0.2], [0.4, 0.7]])
    path = write_file_predictions(tmp_path / "p.csv", ["a.png", "b,c.png"], probs, ["Edema", "No Finding"],
                                  multilabel=True)
    assert path.read_text().splitlines()[0] == "file,prob_Edema,prob_No Finding"
    rows = read_predictions(path)
    assert list(rows["file"]) == ["a.png", "b,c.png"] and "predicted" not in rows
    np.testing.assert_allclose(np.stack([rows["prob_Edema"], rows["prob_No Finding"]], 1), probs)
    with pytest.raises(ValueError, match=r"^1 files and probabilities of shape \(2, 2\) do not describe"):
        write_file_predictions(tmp_path / "q.csv", ["a.png"], probs, ["Edema", "No Finding"], multilabel=True)
