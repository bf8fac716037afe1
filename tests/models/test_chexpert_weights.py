"""``--pretrained chexpert`` end to end on a small CheXpert-layout fixture, with the tiny test network.

The paper's path: pretrain on CheXpert from random initialisation, ``ttlx weights import chexpert RUN_DIR``,
then fine-tune with ``--pretrained chexpert``. Without imported weights, an architecture with torchxrayvision's
CheXpert-only weights (densenet121; here a tiny stand-in) substitutes them, says so and records it in
config.json with their input convention; any other architecture stops with one sentence.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file
from typer.testing import CliRunner

from ttlx import registry
from ttlx.cli import app
from ttlx.errors import WeightsError
from ttlx.models.architecture import HubWeights
from ttlx.models.weights.pretrained import convert_file, converted_path, resolve_source

FINDINGS = ("No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,"
            "Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Device").split(",")


@pytest.fixture(scope="module")
def chexpert_data(tmp_path_factory, tinynet):
    """A prepared CheXpert-v1.0-small of 24 patients (one frontal view each), grey 40 px images."""
    from ttlx.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("chexpert")
    folder = root / "download" / "CheXpert-v1.0-small"
    rng = np.random.default_rng(0)
    for table, patients in (("train", range(1, 21)), ("valid", range(64541, 64545))):
        rows = [["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS]]
        for p in patients:
            path = f"CheXpert-v1.0-small/{table}/patient{p:05d}/study1/view1_frontal.jpg"
            labels = rng.choice(["1.0", "0.0", "-1.0", ""], size=len(FINDINGS))
            level = 60 + 120 * (labels[3] == "1.0")  # Lung Opacity is visible: a brighter image
            (root / "download" / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.normal(level, 20, (40, 40)).clip(0, 255).astype(np.uint8), "L").save(
                root / "download" / path)
            rows.append([path, "Female", "50", "Frontal", "PA", *labels])
        with open(folder / f"{table}.csv", "w", newline="") as file:
            csv.writer(file).writerows(rows)
    prepare_dataset("chexpert", root / "data", root / "download")
    return root / "data"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTLX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def train_on_chexpert(data_dir, workdir, **overrides):
    from tiny_model import tiny_train_config

    from ttlx.training.loop import train

    cfg = tiny_train_config(workdir, dataset="chexpert", data_dir=str(data_dir), batch_size=4, max_epoch=1,
                            num_workers=0, **overrides)
    return train(cfg, progress=False)


@pytest.mark.slow
def test_pretrain_import_and_finetune_with_pretrained_chexpert(chexpert_data, tmp_path, cache, tinynet):
    with pytest.raises(WeightsError, match=r"^--pretrained chexpert: the paper's CheXpert weights for tinynet "
                                           r"were never released and none are imported; pretrain tinynet on "
                                           r"CheXpert with ttlx and run `ttlx weights import chexpert RUN_DIR`"):
        resolve_source(tinynet, "chexpert")
    pretrained = train_on_chexpert(chexpert_data, tmp_path / "pre", pretrained="random")
    result = CliRunner().invoke(app, ["weights", "import", "chexpert", str(pretrained)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"tinynet source chexpert is now {pretrained}'s backbone")
    listed = json.loads(CliRunner().invoke(app, ["weights", "list", "--json"]).output)
    assert {"model": "tinynet", "source": "chexpert", "origin": f"ttlx run {pretrained.name}",
            "trained_on": "chexpert", "input": "imagenet", "cached": True}.items() <= \
        next(r for r in listed if r["model"] == "tinynet" and r["source"] == "chexpert").items()

    run = train_on_chexpert(chexpert_data, tmp_path / "fine", pretrained="chexpert", trunc=1)
    config = json.loads((run / "config.json").read_text())
    assert config["source"] == {"name": "chexpert", "resolved": "chexpert", "input": "imagenet"}
    from ttlx.evaluation.trained_run import open_trained_run
    from ttlx.runs.checkpoint import load_run_weights

    start = open_trained_run(run).starting_network()  # the imported backbone, cut at block 1
    _, imported = load_run_weights(pretrained)
    np.testing.assert_array_equal(np.asarray(start.layer1[0].conv.kernel.get_value()),
                                  imported["layer1.0.conv.kernel"])


@pytest.fixture
def tinyxrv(tinynet):
    """tinynet with a CheXpert-only chest-X-ray source (as densenet121 has xrv-chex), 1-channel stem."""
    arch = replace(tinynet, name="tinyxrv", weights={"xrv-chex": HubWeights("someone/tinyxrv", "model.pt",
                                                                               input="xrv", trained_on="CheXpert")})
    registry.models.register("tinyxrv", arch, package="tests")
    yield arch
    registry.models.unregister("tinyxrv")


@pytest.mark.slow
def test_with_nothing_imported_the_public_chexpert_weights_substitute_and_bring_their_input(
        chexpert_data, tinyxrv, tmp_path, cache):
    from test_pretrained import tiny_state

    state = tiny_state("tinyxrv")
    state["conv1.weight"] = state["conv1.weight"][:, :1]  # a grey stem, as torchxrayvision's
    save_file(state, str(tmp_path / "xrv.safetensors"))
    cached = convert_file(tinyxrv, tmp_path / "xrv.safetensors", "xrv-chex")
    assert cached == converted_path("tinyxrv", "xrv-chex")
    run = train_on_chexpert(chexpert_data, tmp_path / "sub", model="tinyxrv", pretrained="chexpert")
    source = json.loads((run / "config.json").read_text())["source"]
    assert (source["name"], source["resolved"], source["input"]) == ("chexpert", "xrv-chex", "xrv")
    assert source["note"].startswith("--pretrained chexpert: the paper's CheXpert weights were never released, "
                                     "so tinyxrv starts from torchxrayvision's CheXpert-only DenseNet121")
    from ttlx.evaluation.trained_run import open_trained_run

    trained = open_trained_run(run)
    assert trained.input_convention == "xrv"
    batch = next(iter(trained.loader("test", batch_size=4)))
    assert batch["image"].dtype == np.float32 and batch["image"].min() >= -1024 and batch["image"].max() <= 1024
    assert batch["image"].max() > 100  # torchxrayvision's scale, not ImageNet's
    from ttlx.evaluation.predict import image_files, predict_files

    image = next((chexpert_data.parent / "download").rglob("*.jpg"))
    grey = image_files([image], 32, trained.stored_form(), trained.input_convention)
    assert grey.min() >= -1024 and grey.max() <= 1024 and np.ptp(grey) > 100
    csv_path, summary = predict_files(run, [image], out=tmp_path / "p.csv")
    assert summary["files"] == 1 and csv_path.is_file()


def test_a_run_is_not_resumed_once_its_source_means_other_weights(tmp_path):
    from ttlx.errors import UserError
    from ttlx.runs.run_dir import RunDir, check_same_source

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    started = {"name": "chexpert", "resolved": "xrv-chex", "input": "xrv"}
    (run.path / "config.json").write_text(json.dumps({"source": started}))
    check_same_source(run, dict(started))  # unchanged: resumes
    with pytest.raises(UserError, match=r"started from xrv-chex \(input xrv\), but --pretrained chexpert now means "
                                        r"chexpert \(input imagenet\); start it afresh with --force"):
        check_same_source(run, {"name": "chexpert", "resolved": "chexpert", "input": "imagenet"})
