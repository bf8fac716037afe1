"""A user's own data (folder, csv) and the synthetic generator, with their bad-input messages."""

import csv

import numpy as np
import pytest
from PIL import Image

from ttlx.data import pipeline
from ttlx.data.datasets.synthetic import CLASSES, synthetic_image
from ttlx.data.prepare import prepare_dataset
from ttlx.errors import ConfigError, DataError


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 8), (value, 40, 200 - value)).save(path)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "mine"
    for c, name in enumerate(("benign", "malignant", "normal")):
        for i in range(10):
            _png(root / name / ("sub" if i % 3 == 0 else "") / f"img{i}.png", 20 * c + i)
    (root / "benign" / "notes.txt").write_text("not an image")
    return root


def test_folder_takes_one_class_per_sub_folder(folder, tmp_path):
    root = prepare_dataset("folder", tmp_path / "data", folder)
    info = pipeline.dataset_info("folder", tmp_path / "data")
    assert info.classes == ("benign", "malignant", "normal")
    rows = [r for s in ("train", "val", "test") for r in _rows(root / "splits" / "exp1" / f"{s}.csv")]
    assert len(rows) == 30 and {"benign/sub/img0.png", "normal/img1.png"} <= {r["id"] for r in rows}
    assert all(r["label"] == r["id"].split("/")[0] for r in rows)


def test_folder_class_list_option_and_folders_outside_it(folder, tmp_path):
    with pytest.raises(DataError, match=r"has folders outside the class list \(benign, malignant\): normal"):
        prepare_dataset("folder", tmp_path / "data", folder, classes="benign,malignant")
    prepare_dataset("folder", tmp_path / "data", folder, classes="normal,benign,malignant")
    assert pipeline.dataset_info("folder", tmp_path / "data").classes == ("normal", "benign", "malignant")


def test_folder_with_an_empty_class_is_refused(folder, tmp_path):
    (folder / "rare").mkdir()
    with pytest.raises(DataError, match="'folder' has classes without images: rare"):
        prepare_dataset("folder", tmp_path / "data", folder)


def test_folder_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match=r"The manual dir .*nowhere does not exist; pass the folder holding 'folder'"):
        prepare_dataset("folder", tmp_path / "data", tmp_path / "nowhere")


@pytest.fixture
def table(tmp_path):
    root = tmp_path / "images"
    rows = []
    for i in range(30):
        _png(root / f"scan_{i}.png", 7 * i)
        rows.append([f"scan_{i}.png", ("2", "10", "1")[i % 3], f"patient{i // 3}"])
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image_path", "class", "patient_id"], *rows])
    return root, tmp_path / "labels.csv"


def test_csv_keeps_patients_together_and_sorts_numeric_labels(table, tmp_path):
    images, labels = table
    root = prepare_dataset("csv", tmp_path / "data", images, csv=labels)
    assert pipeline.dataset_info("csv", tmp_path / "data").classes == ("1", "2", "10")
    seen = {}
    for split in ("train", "val", "test"):
        for row in _rows(root / "splits" / "exp1" / f"{split}.csv"):
            assert seen.setdefault(row["group"], split) == split
    assert len(seen) == 10


def test_csv_labels_outside_the_given_classes_name_their_rows(table, tmp_path):
    images, labels = table
    rows = r"labels.csv has labels outside the class list of 'csv' \(1, 2\) on rows 3, 6, 9, 12, 15, 18, 21, 24, 27"
    with pytest.raises(DataError, match=rows + ", 30; fix those rows"):
        prepare_dataset("csv", tmp_path / "data", images, csv=labels, classes="1,2")


def test_csv_referencing_one_image_twice_is_refused(table, tmp_path):
    images, labels = table
    with open(labels, "a") as f:
        f.write("scan_4.png,1,patient99\n")
    with pytest.raises(DataError, match=r"'csv' has duplicate ids: scan_4.png; ids must be unique"):
        prepare_dataset("csv", tmp_path / "data", images, csv=labels)
    text = labels.read_text().replace("image_path,class,patient_id", "image_path,class,patient_id,id")
    lines = [f"{line},id{n}" for n, line in enumerate(text.splitlines()[1:])]
    labels.write_text("image_path,class,patient_id,id\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"references the same image more than once: .*scan_4.png; list each image"):
        prepare_dataset("csv", tmp_path / "data", images, csv=labels)


def test_csv_without_csv_option_needs_exactly_one_csv(table, tmp_path):
    images, _ = table
    with pytest.raises(
        DataError, match=r"images holds no CSV file; pass the CSV listing the images of 'csv' with --csv"
    ):
        prepare_dataset("csv", tmp_path / "data", images)


def test_synthetic_images_are_deterministic_and_sized():
    a, label = synthetic_image(7, 48)
    b, _ = synthetic_image(7, 48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and label == 7 % 3
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, synthetic_image(10, 48)[0])  # same class, another image


def test_synthetic_classes_are_told_apart_by_texture_statistics():
    from sklearn.linear_model import LogisticRegression

    def spectrum(index):
        gray = synthetic_image(index, 64)[0].mean(axis=2)
        power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
        y, x = np.indices(power.shape) - 32
        radius = np.sqrt(x**2 + y**2).astype(int).ravel()
        return np.log1p(np.bincount(radius, power.ravel(), minlength=46)[:32:4])

    features = np.stack([spectrum(i) for i in range(120)])
    labels = np.arange(120) % len(CLASSES)
    model = LogisticRegression(max_iter=2000).fit(features[:90], labels[:90])
    assert model.score(features[90:], labels[90:]) >= 0.9


def test_synthetic_count_and_size_options(tmp_path):
    root = prepare_dataset("synthetic", tmp_path / "data", count=45, size=24)
    rows = [r for s in ("train", "val", "test") for r in _rows(root / "splits" / "exp1" / f"{s}.csv")]
    assert len(rows) == 45 and {r["label"] for r in rows} == set(CLASSES)
    batch = next(
        iter(
            pipeline.make_loader(
                "synthetic", tmp_path / "data", exp=1, split="test", batch_size=4, image_size=24, train=False
            )
        )
    )
    assert batch["image"].shape == (4, 24, 24, 3)
    with pytest.raises(ConfigError, match="synthetic needs --count of at least 30"):
        prepare_dataset("synthetic", tmp_path / "other", count=5)
