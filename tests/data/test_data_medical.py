"""HAM10000, BIMCV and CheXpert from tiny fake manual dirs with the real layouts, and their bad input."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from ttlx.data import pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.data.records import RecordReader
from ttlx.data.store import load_prepared
from ttlx.errors import DataError
from ttlx.registry import datasets

HAM_CLASSES = ("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df")


def _image(path, value, size=(12, 9), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 60)
    Image.new(mode, size, color).save(path, quality=90)


def _write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def ham(tmp_path):
    """42 images of 28 lesions (some lesions have 2-3 images), every class present, both image parts."""
    root = tmp_path / "HAM10000"
    rows = []
    for i in range(42):
        lesion, image_id = f"HAM_{i // 3 if i < 21 else i - 7:07d}", f"ISIC_{i:07d}"
        dx = HAM_CLASSES[(i // 3) % 7] if i < 21 else HAM_CLASSES[i % 7]
        rows.append([lesion, image_id, dx, "histo", "50.0", "male", "back"])
        _image(root / f"HAM10000_images_part_{1 + i % 2}" / f"{image_id}.jpg", 5 * i, size=(40, 30))
    _write_csv(
        root / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], rows
    )
    return root


def test_ham10000_builds_with_lesions_kept_in_one_split(ham, tmp_path):
    root = prepare_dataset("HAM", tmp_path / "data", ham)
    assert root.name == "ham10000"
    meta = load_prepared("ham10000", tmp_path / "data").meta
    assert meta["classes"] == list(HAM_CLASSES) and meta["num_examples"] == 42
    for exp in (1, 2, 3):
        seen = {}
        for split in ("train", "val", "test"):
            for row in _rows(root / "splits" / f"exp{exp}" / f"{split}.csv"):
                assert seen.setdefault(row["group"], split) == split, f"lesion {row['group']} leaks"
        assert len(seen) == 28


def test_ham10000_images_are_padded_to_a_white_square(ham, tmp_path):
    root = prepare_dataset("ham10000", tmp_path / "data", ham)
    data, label, example_id = RecordReader(load_prepared("ham10000", tmp_path / "data").records_dir).read(0)
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert image.shape == (40, 40, 3)
    assert image[0].min() > 240 and image[-1].min() > 240  # the white bands above and below
    assert (root / "index.npz").is_file() and example_id.startswith("ISIC_")


def test_ham10000_missing_and_incomplete_manual_dir(tmp_path):
    needs = r"needs its downloaded files: pass --manual-dir PATH\. Download it from https://doi\.org/10\.7910/"
    with pytest.raises(DataError, match=needs):
        prepare_dataset("ham10000", tmp_path / "data")
    (tmp_path / "HAM").mkdir()
    with pytest.raises(DataError) as err:
        prepare_dataset("ham10000", tmp_path / "data", tmp_path / "HAM")
    assert "missing HAM10000_metadata.csv, HAM10000_images_part_1/, HAM10000_images_part_2/" in str(err.value)
    assert "doi.org/10.7910/DVN/DBW86T" in str(err.value)
    (tmp_path / "HAM" / "HAM10000_images_part_1.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"Unzip HAM10000_images_part_1.zip in .*HAM first"):
        prepare_dataset("ham10000", tmp_path / "data", tmp_path / "HAM")


def test_ham10000_lists_every_unreadable_image_then_skips_them_on_request(ham, tmp_path):
    (ham / "HAM10000_images_part_1" / "ISIC_0000004.jpg").write_bytes(b"not a jpeg at all")
    whole = (ham / "HAM10000_images_part_2" / "ISIC_0000007.jpg").read_bytes()
    (ham / "HAM10000_images_part_2" / "ISIC_0000007.jpg").write_bytes(whole[: len(whole) // 2])
    (ham / "HAM10000_images_part_1" / "ISIC_0000010.jpg").unlink()
    with pytest.raises(DataError) as err:
        prepare_dataset("ham10000", tmp_path / "data", ham)
    message = str(err.value)
    assert message.startswith("3 image(s) of 'ham10000' could not be read:")
    for name, why in (
        ("ISIC_0000004.jpg", "not an image or corrupt"),
        ("ISIC_0000007.jpg", "truncated"),
        ("ISIC_0000010.jpg", "file not found"),
    ):
        assert f"{name} ({why})" in message
    assert "--on-bad-image skip" in message
    assert not (tmp_path / "data" / "ham10000").exists()
    root = prepare_dataset("ham10000", tmp_path / "data", ham, on_bad_image="skip")
    meta = json.loads((root / "prepared.json").read_text())
    assert meta["num_examples"] == 39 and len(meta["skipped"]) == 3
    assert [r["reason"] for r in _rows(root / "skipped.csv")] == [
        "not an image or corrupt",
        "truncated",
        "file not found",
    ]
    ids = {r["id"] for s in ("train", "val", "test") for r in _rows(root / "splits" / "exp1" / f"{s}.csv")}
    assert len(ids) == 39 and "ISIC_0000004" not in ids


def test_ham10000_labels_outside_the_class_list_name_their_rows(ham, tmp_path):
    text = (ham / "HAM10000_metadata.csv").read_text().splitlines()
    text[3] = text[3].replace(",nv,", ",melanoma,").replace(",mel,", ",melanoma,")
    text[8] = text[8].replace(text[8].split(",")[2], "unknown")
    (ham / "HAM10000_metadata.csv").write_text("\n".join(text) + "\n")
    rows = r"outside the class list of 'ham10000' \(nv, mel, bkl, bcc, akiec, vasc, df\) on rows 4, 9; fix those"
    with pytest.raises(DataError, match=rows):
        prepare_dataset("ham10000", tmp_path / "data", ham)


def test_ham10000_duplicate_image_ids_are_refused(ham, tmp_path):
    with open(ham / "HAM10000_metadata.csv", "a") as f:
        f.write("HAM_0000099,ISIC_0000003,nv,histo,40.0,female,face\n")
    with pytest.raises(DataError, match="'ham10000' has duplicate ids: ISIC_0000003; ids must be unique"):
        prepare_dataset("ham10000", tmp_path / "data", ham)


def test_ham10000_imports_reference_splits_and_their_subsets(ham, tmp_path):
    ids = [f"ISIC_{i:07d}" for i in range(42)]
    parts = {"train": ids[:26], "val": ids[26:33], "test": ids[33:]}
    for exp in ("1", "2", "3"):
        for split, members in parts.items():
            _write_csv(
                tmp_path / "splits" / exp / f"{split}.csv",
                ["lesion_id", "image_id", "dx"],
                [["L", i, "nv"] for i in members],
            )
    _write_csv(tmp_path / "splits" / "1" / "train_0.1.csv", ["image_id"], [[ids[0]], [ids[5]]])
    prepare_dataset("ham10000", tmp_path / "data", ham, splits_from=tmp_path / "splits")
    assert pipeline.split_ids("ham10000", tmp_path / "data", exp=2, split="val") == parts["val"]
    assert pipeline.split_ids("ham10000", tmp_path / "data", exp=1, split="train", sub=10) == [ids[0], ids[5]]
    meta = load_prepared("ham10000", tmp_path / "data").meta
    assert meta["splits"].startswith("imported from") and meta["leaking_groups"] == 0


def test_imported_splits_with_unknown_ids_are_refused(ham, tmp_path):
    for split in ("train", "val", "test"):
        _write_csv(tmp_path / "splits" / "1" / f"{split}.csv", ["image_id"], [[f"ISIC_9{split}"]])
    with pytest.raises(DataError, match=r"train.csv lists 1 images the dataset does not have \(first: ISIC_9train\)"):
        prepare_dataset("ham10000", tmp_path / "data", ham, splits_from=tmp_path / "splits")


@pytest.fixture
def bimcv(tmp_path):
    """The reference layout: crop/ with lung-cropped PNGs and a CSV; users name the columns differently."""
    root = tmp_path / "BIMCV"
    rows = []
    for i in range(36):
        name = f"sub-S{i // 2:05d}_ses-E{i:05d}_run-1_bp-chest_vp-ap_cr.png"
        _image(root / "crop" / name, 3 * i, size=(10, 14), mode="L")
        rows.append([name, ("positive", "0", "1", "negative")[i % 4]])
    _write_csv(root / "bimcv_covid.csv", ["filename", "COVID"], rows)
    return root


def test_bimcv_reads_user_column_names_and_groups_by_subject(bimcv, tmp_path):
    csv_file = bimcv / "bimcv_covid.csv"
    csv_file.write_text(csv_file.read_text().replace("filename,COVID", "Path,label"))
    root = prepare_dataset("BIMCV", tmp_path / "data", bimcv)
    info = pipeline.dataset_info("bimcv", tmp_path / "data")
    assert info.classes == ("negative", "positive") and info.channels == 1 and not info.multilabel
    train = _rows(root / "splits" / "exp1" / "train.csv")
    assert all(r["group"].startswith("sub-S") for r in train)
    assert {r["label"] for r in train} == {"negative", "positive"}
    groups = [r["group"] for s in ("train", "val", "test") for r in _rows(root / "splits" / "exp1" / f"{s}.csv")]
    assert len(set(groups)) == 18


def test_bimcv_without_a_label_column_says_which_names_work(bimcv, tmp_path):
    csv_file = bimcv / "bimcv_covid.csv"
    csv_file.write_text(csv_file.read_text().replace("filename,COVID", "filename,result"))
    with pytest.raises(DataError, match="has no label column; name one of its columns label or class or target"):
        prepare_dataset("bimcv", tmp_path / "data", bimcv)


def test_bimcv_unknown_label_values_name_their_rows(bimcv, tmp_path):
    with open(bimcv / "bimcv_covid.csv", "a") as f:
        f.write("extra.png,maybe\n")
    with pytest.raises(DataError, match=r"on rows 38; fix those rows"):
        prepare_dataset("bimcv", tmp_path / "data", bimcv)


FINDINGS = (
    "No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,"
    "Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Device"
).split(",")
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS]


@pytest.fixture
def chexpert(tmp_path):
    """CheXpert-v1.0-small: 20 patients with a frontal and a lateral view each; values 1, 0, -1, blank."""
    folder = tmp_path / "download" / "CheXpert-v1.0-small"
    values = ["1.0", "0.0", "-1.0", ""]
    for table, patients in (("train", range(1, 17)), ("valid", range(64541, 64545))):
        rows = []
        for p in patients:
            for view in ("frontal", "lateral"):
                path = f"CheXpert-v1.0-small/{table}/patient{p:05d}/study1/view1_{view}.jpg"
                _image(folder.parent / path, p % 200, size=(9, 11), mode="L")
                findings = [values[(p + k) % 4] for k in range(14)]
                rows.append([path, "Male", "60", view.capitalize(), "AP", *findings])
        _write_csv(folder / f"{table}.csv", CHEXPERT_HEADER, rows)
    return tmp_path / "download"


def test_chexpert_is_multilabel_grouped_by_patient_with_frontal_option(chexpert, tmp_path):
    root = prepare_dataset("CheXpert", tmp_path / "data", chexpert)
    info = pipeline.dataset_info("chexpert", tmp_path / "data")
    assert info.multilabel and len(info.classes) == 14 and info.classes[0] == "No Finding"
    rows = [r for s in ("train", "val", "test") for r in _rows(root / "splits" / "exp1" / f"{s}.csv")]
    assert len(rows) == 40 and len({r["group"] for r in rows}) == 20
    first = next(r for r in rows if r["id"].endswith("patient00001/study1/view1_frontal.jpg"))
    # Finding k of patient p holds values[(p + k) % 4]: 0.0, -1.0, blank (= 0), 1.0 for patient 1.
    assert [first[f] for f in info.classes[:4]] == ["0", "-1", "0", "1"]
    frontal = prepare_dataset("chexpert", tmp_path / "frontal", chexpert / "CheXpert-v1.0-small", frontal_only=True)
    assert json.loads((frontal / "prepared.json").read_text())["num_examples"] == 20


@pytest.mark.parametrize(
    "policy, label, mask",
    [
        ("ones", [0, 1, 0, 1], [1, 1, 1, 1]),
        ("zeros", [0, 0, 0, 1], [1, 1, 1, 1]),
        ("ignore", [0, 0, 0, 1], [1, 0, 1, 1]),
    ],
)
def test_chexpert_uncertainty_policies_reach_the_batches(chexpert, tmp_path, policy, label, mask):
    prepare_dataset("chexpert", tmp_path / "data", chexpert, uncertain=policy)
    options = dict(exp=1, split="train", batch_size=4, image_size=16, train=False)
    loader = pipeline.make_loader("chexpert", tmp_path / "data", **options)
    for batch in loader:
        for i, example_id in enumerate(batch["id"]):
            if str(example_id).endswith("patient00001/study1/view1_frontal.jpg"):
                assert batch["label"].dtype == np.float32 and batch["label"].shape == (4, 14)
                np.testing.assert_array_equal(batch["label"][i, :4], label)
                np.testing.assert_array_equal(batch["label_mask"][i, :4], mask)
                return
    pytest.fail("patient00001's frontal view is not in the training split of exp1")


def test_chexpert_class_weights_are_negatives_over_positives(chexpert, tmp_path):
    prepare_dataset("chexpert", tmp_path / "data", chexpert, uncertain="ignore")
    ids = pipeline.split_ids("chexpert", tmp_path / "data", exp=1, split="train")
    rows = {r["id"]: r for r in _rows(tmp_path / "data" / "chexpert" / "splits" / "exp1" / "train.csv")}
    raw = np.asarray(
        [[int(rows[i][f]) for f in pipeline.dataset_info("chexpert", tmp_path / "data").classes] for i in ids]
    )
    expected = (raw == 0).sum(0) / np.maximum((raw == 1).sum(0), 1)
    np.testing.assert_allclose(pipeline.class_weights("chexpert", tmp_path / "data"), expected, rtol=1e-6)


def test_chexpert_bad_values_and_missing_tables(chexpert, tmp_path):
    table = chexpert / "CheXpert-v1.0-small" / "valid.csv"
    lines = table.read_text().splitlines()
    lines[2] = lines[2].replace(",AP,", ",AP,2.0,", 1).rsplit(",", 1)[0]
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"valid.csv has labels outside the class list of 'chexpert' .* on rows 3;"):
        prepare_dataset("chexpert", tmp_path / "data", chexpert)
    table.unlink()
    with pytest.raises(DataError, match=r"incomplete for 'chexpert': missing valid.csv\. Download it from https://"):
        prepare_dataset("chexpert", tmp_path / "data", chexpert)


@pytest.mark.parametrize(
    "typed, canonical",
    [
        ("HAM10000", "ham10000"),
        ("HAM", "ham10000"),
        ("ham10000", "ham10000"),
        ("BIMCV", "bimcv"),
        ("bimcv", "bimcv"),
        ("CheXpert", "chexpert"),
        ("chexpert", "chexpert"),
    ],
)
def test_seed_readme_names_resolve(typed, canonical):
    assert datasets.resolve(typed) == canonical
