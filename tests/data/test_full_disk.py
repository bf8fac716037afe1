"""A disk that fills up during `ttlx prepare`: one sentence, and the data dir left as it was.

``test_a_full_tmpfs_*`` fill a real 3 MB tmpfs: the prepare runs in a child process inside a new user and
mount namespace (``unshare -Urm``, which needs no root where unprivileged user namespaces are allowed), so the
real ArrayRecord writer (or the volume store's writes) hits ENOSPC. Where namespaces are not allowed they skip,
and ``test_a_writer_that_reports_a_full_disk_*`` still runs: it replaces only TFDS's ArrayRecord write with one
that writes the records to the real file and then fails with the C++ writer's message, so TFDS's error
wrapping, ttlx's detection and the cleanup of the partial build are the real ones.
"""

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from ttlx.data import store
from ttlx.data.prepare import prepare_dataset
from ttlx.errors import DataError


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0


needs_namespaces = pytest.mark.skipif(not _namespaces_work(), reason="no user namespaces to mount a tmpfs in")


def _in_small_tmpfs(script: str, mount, size="3m") -> str:
    """Run the shell ``script`` with a fresh tmpfs of ``size`` at ``mount``; its output (stdout + stderr)."""
    mount.mkdir()
    ttlx = f"{sys.executable} -W ignore -m ttlx.cli"
    body = f"mount -t tmpfs -o size={size} tmpfs {mount} || exit 99\nTTLX={ttlx!r}\n{textwrap.dedent(script)}"
    done = subprocess.run(["unshare", "-Urm", "sh", "-c", body], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode != 99, done.stderr
    return done.stdout + done.stderr


@needs_namespaces
@pytest.mark.slow
def test_a_full_tmpfs_gives_one_sentence_and_keeps_the_previous_dataset_2d_and_3d(tmp_path):
    disk = tmp_path / "disk"
    out = _in_small_tmpfs(f"""
        $TTLX prepare synthetic --count 2000 --size 128 --data-dir {disk}/new/data 2>&1 >/dev/null
        echo "rc=$?"; echo "left: $(ls -A {disk})"
        $TTLX prepare synthetic --count 40 --size 32 --data-dir {disk}/data >/dev/null 2>&1; echo "small rc=$?"
        $TTLX prepare synthetic --count 2000 --size 128 --force --data-dir {disk}/data 2>&1 >/dev/null
        echo "rc=$?"; echo "left: $(ls -A {disk}/data)"; grep num_examples {disk}/data/synthetic/prepared.json
        $TTLX prepare synthetic3d --count 80 --size 64 --data-dir {disk}/data 2>&1 >/dev/null
        echo "rc=$?"; echo "left 3d: $(ls -A {disk}/data)"
    """, disk)
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 3, out
    for error, data_dir, name in zip(errors, (f"{disk}/new/data", f"{disk}/data", f"{disk}/data"),
                                     ("synthetic", "synthetic", "synthetic3d"), strict=True):
        free, rest = error.split(" MB were free); ")
        assert free == f"Error: The disk holding {data_dir} filled up while preparing '{name}' ({free[-3:]}"
        assert 2.5 <= float(free[-3:]) <= 3.2  # of the 3 MB tmpfs (3.1 when empty)
        assert rest == "free space there or pass --data-dir on a larger disk (the data dir is left as it was)."
    assert "Traceback" not in out and out.count("rc=2") == 3 and "small rc=0" in out, out
    assert "left: \n" in out, out  # the first prepare removed the data dir it had created (new/data)
    assert "left: synthetic\n" in out and '"num_examples": 40' in out, out  # the previous build is untouched
    assert "left 3d: synthetic\n" in out, out  # the volumes' partial build is gone too


def _write_until_full(cls, path, iterator):
    """ArrayRecordFileAdapter.write_examples' stand-in: writes the records, then fails as the C++ writer does."""
    with open(path, "wb") as file:
        for _, record in iterator:
            file.write(record)
    raise RuntimeError(f"write() failed: No space left on device; writing {path}; at byte 3145728; "
                       "Failed to close chunk_writer")


def test_a_writer_that_reports_a_full_disk_leaves_the_data_dir_as_it_was(tmp_path, monkeypatch):
    from tensorflow_datasets.core import file_adapters

    prepare_dataset("synthetic", tmp_path, count=30, size=16)
    before = sorted(os.listdir(tmp_path)), (tmp_path / "synthetic" / "prepared.json").read_text()
    monkeypatch.setattr(file_adapters.ArrayRecordFileAdapter, "write_examples", classmethod(_write_until_full))
    with pytest.raises(DataError, match=rf"^The disk holding {tmp_path} filled up while preparing 'synthetic' "
                                        r"\([0-9.]+ [MG]B were free\); free space there"):
        prepare_dataset("synthetic", tmp_path, count=40, size=16, force=True)
    assert (sorted(os.listdir(tmp_path)), (tmp_path / "synthetic" / "prepared.json").read_text()) == before
    with pytest.raises(DataError, match="filled up while preparing 'synthetic'"):
        prepare_dataset("synthetic", tmp_path / "new" / "data", count=40, size=16)
    assert sorted(os.listdir(tmp_path)) == before[0]  # new/data was made by the prepare and removed again


def test_an_os_error_for_a_full_disk_or_quota_is_recognised_and_others_are_not(tmp_path, monkeypatch):
    assert store.disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert store.disk_full(OSError(errno.EDQUOT, "quota"))
    wrapped = RuntimeError("Failed to finalize writing of split")
    wrapped.__cause__ = OSError(errno.ENOSPC, "x")
    assert store.disk_full(wrapped)
    assert not store.disk_full(OSError(errno.EACCES, os.strerror(errno.EACCES)))
    assert not store.disk_full(RuntimeError("Failed to finalize writing of split: bad record"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "write_index", full)  # numpy's write of the index, after the records
    with pytest.raises(DataError, match="filled up while preparing 'synthetic'"):
        prepare_dataset("synthetic", tmp_path / "data", count=30, size=16)
    assert os.listdir(tmp_path) == []


def test_other_write_errors_still_raise_as_they_are(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(store, "write_index", denied)
    with pytest.raises(PermissionError):
        prepare_dataset("synthetic", tmp_path / "data", count=30, size=16)
    assert os.listdir(tmp_path) == []
