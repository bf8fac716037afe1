"""``kill -9`` of ``ttlx prepare`` part-way: nothing looks prepared, and the next prepare rebuilds cleanly.

Each case runs prepare in a subprocess (tests/prepare_kill_job.py) that SIGKILLs itself at a chosen
point, so no ``finally`` or ``except`` of ours gets to run: this is what a killed job on a cluster sees.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ttlx.data import pipeline
from ttlx.data.prepare import prepare_dataset
from ttlx.data.records import RecordReader
from ttlx.data.store import load_prepared
from ttlx.errors import DataError

TESTS = Path(__file__).parents[1]
OPTIONS = {"count": 60, "size": 16}  # 60 images: killing after 30 is half-way


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same dataset built without interruption."""
    data_dir = tmp_path_factory.mktemp("reference")
    prepare_dataset("synthetic", data_dir, **OPTIONS)
    return data_dir / "synthetic"


def _killed_prepare(data_dir: Path, where: str, n: int, **options) -> int:
    """Run the job until it SIGKILLs itself; return its pid."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, str(TESTS / "prepare_kill_job.py"), str(data_dir), where, str(n)]
    job = subprocess.Popen(
        [*args, json.dumps({**OPTIONS, **options})], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    out, err = job.communicate(timeout=120)
    assert job.returncode == -signal.SIGKILL, err
    assert out == f"SIGKILL after {where} call {n}\n"
    return job.pid


def _split_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "splits").rglob("*.csv"))}


def _assert_same_build(root: Path, reference: Path) -> None:
    """Same split files byte for byte, same counts, same ids and the same stored image bytes."""
    assert _split_files(root) == _split_files(reference)
    assert len(_split_files(root)) == 9
    built, expected = load_prepared(root.name, root.parent), load_prepared(reference.name, reference.parent)
    for key in ("num_examples", "split_sizes", "classes", "settings", "skipped"):
        assert built.meta[key] == expected.meta[key], key
    assert built.meta["num_examples"] == 60
    np.testing.assert_array_equal(built.index["ids"], expected.index["ids"])
    ours, theirs = RecordReader(built.records_dir), RecordReader(expected.records_dir)
    assert len(ours) == len(theirs) == 60
    assert all(ours.read(i)[0] == theirs.read(i)[0] for i in range(60))


def _not_prepared_sentence(data_dir: Path) -> str:
    command = f"ttlx prepare synthetic --data-dir {data_dir}"
    return f"Dataset 'synthetic' is not prepared in {data_dir}; run `{command}` first."


@pytest.mark.parametrize(("where", "n"), [("encode", 30), ("marker", 1)], ids=["half-way", "before-the-swap"])
def test_kill_9_leaves_nothing_prepared_and_a_rerun_matches_an_uninterrupted_build(tmp_path, reference, where, n):
    pid = _killed_prepare(tmp_path, where, n)
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(f".synthetic.partial-{pid}-")
    if where == "marker":  # a complete build, prepared.json included, but still in its hidden folder
        assert (tmp_path / leftovers[0] / "prepared.json").is_file()
    for look in (
        lambda: pipeline.dataset_info("synthetic", tmp_path),
        lambda: pipeline.split_ids("synthetic", tmp_path, exp=1, split="train"),
    ):
        with pytest.raises(DataError) as err:
            look()
        assert str(err.value) == _not_prepared_sentence(tmp_path)

    root = prepare_dataset("synthetic", tmp_path, **OPTIONS)
    assert os.listdir(tmp_path) == ["synthetic"]  # the killed build's folder is gone
    _assert_same_build(root, reference)


def test_kill_9_during_a_forced_rebuild_keeps_the_previous_dataset(tmp_path, reference):
    prepare_dataset("synthetic", tmp_path, **OPTIONS)
    before = _split_files(tmp_path / "synthetic")
    _killed_prepare(tmp_path, "encode", 30, seed=1, force=True)
    assert load_prepared("synthetic", tmp_path).meta["seed"] == 0
    assert _split_files(tmp_path / "synthetic") == before
    assert pipeline.dataset_info("synthetic", tmp_path).classes == ("spots", "streaks", "haze")

    prepare_dataset("synthetic", tmp_path, seed=1, force=True, **OPTIONS)
    assert load_prepared("synthetic", tmp_path).meta["seed"] == 1
    assert os.listdir(tmp_path) == ["synthetic"]
    assert _split_files(tmp_path / "synthetic") != before  # other seed, other splits


def test_kill_9_between_the_renames_of_a_rebuild_restores_the_previous_dataset(tmp_path, reference):
    prepare_dataset("synthetic", tmp_path, **OPTIONS)
    before = _split_files(tmp_path / "synthetic")
    _killed_prepare(tmp_path, "swap", 1, seed=1, force=True)
    assert not (tmp_path / "synthetic").exists()  # the old dataset is aside, the new one not yet in place
    with pytest.raises(DataError) as err:
        pipeline.dataset_info("synthetic", tmp_path)
    assert str(err.value) == _not_prepared_sentence(tmp_path)
    root = prepare_dataset("synthetic", tmp_path, **OPTIONS)  # the command the sentence asks for
    assert load_prepared("synthetic", tmp_path).meta["seed"] == 0 and _split_files(root) == before
    assert os.listdir(tmp_path) == ["synthetic"]  # the moved-aside copy is back, the dead build's files gone
    _assert_same_build(root, reference)
