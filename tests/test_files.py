"""Atomic writes and their file modes, output paths checked before a run, and the results-folder lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common.files import FolderBusy, OutputError, atomic_write, check_output_dir, check_output_path, folder_lock, write_text

REPO = Path(__file__).resolve().parents[1]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_gets_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    assert mode(write_text(tmp_path / "new.txt", "x")) == expected


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    path.chmod(0o640)
    umask(0o077)
    write_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o640


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_into_a_file_is_one_output_error(tmp_path):
    blocker = write_text(tmp_path / "blocker", "")
    with pytest.raises(OutputError, match=f"output file {blocker}/sub/out.txt: {blocker} is a file, not a folder"):
        write_text(blocker / "sub" / "out.txt", "x")
    with pytest.raises(OutputError, match=f"output file {tmp_path} is a folder"):
        write_text(tmp_path, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_output_path_that_is_a_folder(tmp_path):
    with pytest.raises(OutputError, match=f"--json {tmp_path} is a folder. Fix: give the path of a file"):
        check_output_path(tmp_path, "--json")


def test_output_path_below_a_file(tmp_path):
    blocker = write_text(tmp_path / "blocker", "")
    with pytest.raises(OutputError, match=f"{blocker} is a file, not a folder. Fix:"):
        check_output_path(blocker / "sub" / "history.json", "--json")


def test_output_path_in_folders_still_to_create_is_accepted_and_creates_nothing(tmp_path):
    path = tmp_path / "a" / "b" / "history.json"
    assert check_output_path(path, "--json") == path
    assert list(tmp_path.iterdir()) == []  # the write-test file is gone too


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_output_path_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match=f"cannot create files in {locked} \\(Permission denied\\)"):
        check_output_path(locked / "w.npz", "--save-weights")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_output_path_where_nobody_can_create_files():
    """/proc refuses new files even to root, so this holds however the tests are run."""
    with pytest.raises(OutputError, match="cannot create files in /proc"):
        check_output_path("/proc/lenet-parity-test/history.json", "--json")


def test_output_dir(tmp_path):
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert list(tmp_path.iterdir()) == []
    blocker = write_text(tmp_path / "blocker", "")
    with pytest.raises(OutputError, match=f"--out {blocker} is a file, not a folder"):
        check_output_dir(blocker, "--out")
    with pytest.raises(OutputError, match=f"{blocker} is a file, not a folder"):
        check_output_dir(blocker / "run", "--out")


HOLD_LOCK = """
import sys
from common.files import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def start_holder(folder):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_lock_held_by_another_process_names_it(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(FolderBusy, match=f"{tmp_path} is in use by process {holder.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.communicate("", timeout=60)  # closing its stdin lets it leave the block
    with folder_lock(tmp_path):  # released when the holder finished
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_killed_holder_does_not_leave_the_folder_locked(tmp_path):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    with folder_lock(tmp_path):
        pass


def test_lock_is_released_after_the_block_and_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="inside"):
        with folder_lock(tmp_path / "results"):
            raise RuntimeError("inside")
    with folder_lock(tmp_path / "results"):
        with pytest.raises(FolderBusy):  # a second holder, even in the same process, is refused
            with folder_lock(tmp_path / "results"):
                pass
