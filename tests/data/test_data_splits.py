"""Splits: stratified 64/16/20 that never split a group, nested subsets, reference-layout import."""

import numpy as np
import pytest

from ttlx.data import splits
from ttlx.errors import DataError


def _dataset(n_groups=400, seed=0):
    """Groups of 1-4 images; each group has one class (like HAM10000 lesions), classes imbalanced."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_groups)
    group_class = rng.choice(3, n_groups, p=[0.6, 0.3, 0.1])
    groups = np.repeat([f"g{i}" for i in range(n_groups)], sizes).astype(object)
    strata = np.repeat(group_class, sizes)
    return strata, groups


def test_random_split_is_64_16_20_and_keeps_groups_together():
    strata, groups = _dataset()
    assignment = splits.random_split(strata, groups, seed=0, exp=1)
    fractions = {s: np.mean(assignment == s) for s in splits.SPLITS}
    assert fractions["test"] == pytest.approx(0.20, abs=0.02)
    assert fractions["val"] == pytest.approx(0.16, abs=0.02)
    assert fractions["train"] == pytest.approx(0.64, abs=0.02)
    assert splits.leaking_groups(assignment, groups) == []


def test_random_split_is_stratified():
    strata, groups = _dataset()
    assignment = splits.random_split(strata, groups, seed=0, exp=1)
    overall = np.bincount(strata) / len(strata)
    for split in splits.SPLITS:
        share = np.bincount(strata[assignment == split], minlength=3) / np.sum(assignment == split)
        np.testing.assert_allclose(share, overall, atol=0.04)


def test_repeats_differ_and_a_seed_reproduces_them():
    strata, groups = _dataset()
    first = [splits.random_split(strata, groups, seed=7, exp=k) for k in splits.REPEATS]
    again = [splits.random_split(strata, groups, seed=7, exp=k) for k in splits.REPEATS]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    assert not np.array_equal(first[0], splits.random_split(strata, groups, seed=8, exp=1))


def test_too_few_groups_is_a_data_error():
    with pytest.raises(DataError, match="at least 5 distinct groups"):
        splits.random_split(np.zeros(8, int), np.asarray(["a", "b", "c", "d"] * 2, object), seed=0, exp=1)


def test_leaking_groups_finds_a_group_in_two_splits():
    assignment = np.asarray(["train", "train", "test", "val"], object)
    groups = np.asarray(["a", "b", "a", "c"], object)
    assert splits.leaking_groups(assignment, groups) == ["a"]


def test_subsets_are_nested_stratified_and_deterministic():
    strata = np.repeat([0, 1, 2], [500, 300, 200])
    chosen = {p: set(splits.subset(strata, p, seed=0, exp=1, split="train")) for p in (10, 20, 50, 100)}
    assert chosen[10] < chosen[20] < chosen[50] < chosen[100]
    counts = np.bincount(strata[sorted(chosen[10])])
    np.testing.assert_array_equal(counts, [50, 30, 20])
    again = splits.subset(strata, 10, seed=0, exp=1, split="train")
    np.testing.assert_array_equal(again, sorted(chosen[10]))
    other = set(splits.subset(strata, 10, seed=0, exp=1, split="val"))
    assert other != chosen[10]


def test_subset_keeps_one_example_of_a_rare_class():
    strata = np.asarray([0] * 100 + [1] * 3)
    kept = splits.subset(strata, 10, seed=0, exp=1, split="train")
    assert np.bincount(strata[kept]).tolist() == [10, 1]


@pytest.mark.parametrize("pct", [0, 101, -5])
def test_subset_rejects_bad_percentages(pct):
    with pytest.raises(DataError, match="--sub must be a percentage in 1..100"):
        splits.subset(np.zeros(10, int), pct, seed=0, exp=1, split="train")


def test_imported_layout_accepts_numbered_and_exp_folders(tmp_path):
    for name in ("1", "exp2"):
        for split in splits.SPLITS:
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / f"{split}.csv").write_text("id\n")
    (tmp_path / "1" / "train_0.1.csv").write_text("id\n")
    (tmp_path / "1" / "val_0.5.csv").write_text("id\n")
    found = splits.imported_layout(tmp_path)
    assert found == {1: tmp_path / "1", 2: tmp_path / "exp2"}
    subsets = splits.imported_subsets(tmp_path / "1")
    assert subsets == {
        ("train", 10): tmp_path / "1" / "train_0.1.csv",
        ("val", 50): tmp_path / "1" / "val_0.5.csv",
    }


def test_imported_layout_without_files_says_what_it_expects(tmp_path):
    with pytest.raises(DataError, match=r"expected .*/1/train.csv, val.csv and test.csv"):
        splits.imported_layout(tmp_path)


def test_read_ids_takes_the_first_known_id_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("lesion_id,image_id,dx\nL1,ISIC_1,nv\nL2,ISIC_2,mel\n")
    assert splits.read_ids(path, ("image_id", "id")) == ["ISIC_1", "ISIC_2"]
    with pytest.raises(DataError, match="has none of the id columns path"):
        splits.read_ids(path, ("path",))
