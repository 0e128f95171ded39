"""Writing the user's files: atomic writes, output paths checked before a run, a lock per results folder."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"
WRITABLE_FIX = "Fix: choose a path in a folder you can write to, or create that folder first."


class OutputError(ValueError):
    """An output path that cannot be written; the message names the path, the problem and the fix."""


class FolderBusy(RuntimeError):
    """Another live process holds a results folder's lock."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(file_object) on a temp file beside path, then rename it into place.

    Readers see the old file or the new one, never half of one. A new file gets the mode the
    user's umask gives any new file; a replaced file keeps its mode. An OSError becomes an
    OutputError naming the path, and no temp file is left behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not mkstemp: its file is 0600 and would stay so after the rename. 0o666 lets the kernel
        # apply the umask, as for any file the user creates.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            if os.path.isfile(path):
                os.fchmod(f.fileno(), stat.S_IMODE(path.stat().st_mode))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(path, err) from err
        raise
    return path


def _write_error(path: Path, err: OSError) -> OutputError:
    """The clearest OutputError for a failed write: a file in the way is named, errno's words otherwise."""
    try:
        check_output_path(path)
    except OutputError as named:
        return named
    return OutputError(f"cannot write {path}: {err.strerror or err}. {WRITABLE_FIX}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _check_can_create_in(folder: Path, what: str, path: Path) -> None:
    """OutputError unless folder is, or could be made, a folder this process can create files in."""
    existing = folder
    # os.path rather than Path here: False instead of a PermissionError inside folders one may not read.
    while not os.path.exists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} {path}: {existing} is a file, not a folder. Fix: choose another path, or move that file away.")
    # Trying is the only honest test: permission bits say nothing about root, read-only mounts or ACLs.
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-test.")
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot create files in {existing} ({err.strerror or err}). {WRITABLE_FIX}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: str | os.PathLike, what: str = "output file") -> Path:
    """The file path, if a file can be written there; else an OutputError saying why and what to do.

    Runs before the work, so a bad path fails in a second instead of after a whole run. Creates nothing.
    """
    path = Path(path)
    if os.path.isdir(path):
        raise OutputError(f"{what} {path} is a folder. Fix: give the path of a file, inside that folder or elsewhere.")
    _check_can_create_in(path.parent, what, path)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """The folder path, if it is or can become a folder to write in; else an OutputError. Creates nothing."""
    path = Path(path)
    if os.path.exists(path) and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder. Fix: give a folder path, or move the file away.")
    _check_can_create_in(path, what, path)
    return path


@contextmanager
def folder_lock(folder: str | os.PathLike):
    """Hold an exclusive lock on folder (its .lock file) while the block runs; FolderBusy if another process has it.

    flock, not a pid file: the kernel drops the lock when its holder exits, however it exits, so a
    crashed run never leaves a folder locked. The pid in the file only names the holder in the message.
    The .lock file stays: deleting it would let a second process lock a new file while a third
    still holds the old one.
    """
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise OutputError(f"cannot lock {folder}: {lock_path}: {err.strerror or err}. {WRITABLE_FIX}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            holder = f"process {pid}" if pid.isdigit() else "another process"
            raise FolderBusy(
                f"{folder} is in use by {holder}, which holds {lock_path}. "
                "Fix: wait for that run to finish (or stop it), or use another folder."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock
