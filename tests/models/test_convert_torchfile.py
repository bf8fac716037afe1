"""Reading torch ``.pth`` files without torch: both formats read exactly, anything but tensors refused."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ttlx.errors import WeightsError
from ttlx.models.weights.torchfile import LEGACY_MAGIC, load_torch_file, state_dict_in

GOLDEN = Path(__file__).parents[1] / "golden"


class RunsACommand:
    """What a malicious pickle holds: unpickling it would run ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("name", ["torchfile_zip.pt", "torchfile_legacy.pt"])
def test_torch_saved_files_read_exactly(name):
    # written by torch.save in scripts/make_golden.py: float16, bfloat16, int64 scalar, views, empty, bool
    state = load_torch_file(GOLDEN / name)
    with np.load(GOLDEN / "torchfile_expected.npz") as expected:
        assert sorted(state) == sorted(expected.files)
        for key in expected.files:
            assert state[key].shape == expected[key].shape, key
            assert np.array_equal(state[key].astype(expected[key].dtype), expected[key]), key
    assert state["half"].dtype == np.float16 and state["bn.num_batches_tracked"].dtype == np.int64
    assert state["transposed"].shape == (6, 4) and state["transposed"].flags["C_CONTIGUOUS"]


def test_a_zip_pickle_that_would_run_code_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": RunsACommand(marker)}, protocol=2))
    with pytest.raises(WeightsError, match=r"holds a pickled posix\.system, not only tensors; ttlx never "
                                           r"unpickles arbitrary objects"):
        load_torch_file(path)
    assert not marker.exists()


def test_a_legacy_header_that_would_run_code_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(RunsACommand(marker), protocol=2))
    with pytest.raises(WeightsError, match="holds a pickled posix.system"):
        load_torch_file(path)
    buffer = io.BytesIO()
    for part in (LEGACY_MAGIC, 1001, {"little_endian": True}, RunsACommand(marker)):
        pickle.dump(part, buffer, protocol=2)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(WeightsError, match="holds a pickled posix.system"):
        load_torch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["torchfile_zip.pt", "torchfile_legacy.pt"])
def test_a_truncated_file_is_reported_as_such(name, tmp_path):
    data = (GOLDEN / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(WeightsError, match=rf"^{path} is truncated or corrupt \(.*\); download it again\.$"):
        load_torch_file(path)


def test_a_checkpoint_holding_a_state_dict_is_unwrapped():
    weights = {"fc.weight": np.ones((2, 2), np.float32)}
    assert state_dict_in({"state_dict": weights, "epoch": 3}, Path("c.pth")) is not weights
    assert state_dict_in({"model": weights}, Path("c.pth")).keys() == {"fc.weight"}
    with pytest.raises(WeightsError, match=r"^c\.pth holds no state dict"):
        state_dict_in({"epoch": 3}, Path("c.pth"))


def test_a_file_that_is_no_torch_file_says_what_to_give(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"PK-like but not: just text")
    with pytest.raises(WeightsError) as err:
        load_torch_file(path)
    assert str(err.value) == (f"{path} is not a file torch.save wrote (nor safetensors); give a torchvision "
                              f".pth or .safetensors state dict.")
