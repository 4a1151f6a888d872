"""The writer lock of a run folder: `<run>/.lock`, held with `flock` while a process writes.

Non-blocking: a run that another process is writing (the same --run-id, or a --resume of
it) is refused at once, naming the holder's pid. The OS drops a flock when its process
exits, killed or not, so a crashed run never stays locked; a process that lets go removes
the file too, so no stale .lock is left behind. The file is removed while still held, so a
process that opened it just before must find, once it holds the lock, that the path no
longer names its file, and try again on a new one. A planted link is never followed, and
a FIFO or device in its place is refused (pmbench.safe_io).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from pmbench.errors import BadInput
from pmbench.safe_io import make_folder, open_regular, reason

LOCK_FILE = ".lock"


def _is_open_file(fd: int, path: Path) -> bool:
    """Whether `path` (not followed) is the file open as `fd`."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _open_and_lock(folder: Path, path: Path, run_id: str) -> int:
    make_folder(folder)  # the run folder itself is no link either
    try:
        fd = open_regular(path, os.O_RDWR, create=True)  # no link, FIFO or device
    except OSError as exc:
        raise BadInput(f"cannot create {path}: {reason(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise BadInput(f"run {run_id} is being written by another process "
                           f"(pid {holder})") from None
        raise BadInput(f"cannot lock {path}: {reason(exc)}") from None
    return fd


def take_lock(folder: Path, run_id: str) -> int:
    """The open, flocked lock file of run folder `folder` (BadInput when another process
    holds it); it records this process's pid, for that message."""
    path = folder / LOCK_FILE
    for _ in range(5):  # the holder before us unlinks the file as it lets go: try anew
        fd = _open_and_lock(folder, path, run_id)
        if _is_open_file(fd, path):
            break
        os.close(fd)
    else:
        raise BadInput(f"cannot lock {path}: it keeps being replaced")
    try:  # who holds it, for the message above; informational only
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd


def release_lock(fd: int, folder: Path) -> None:
    """Remove the lock file (while still held) and let it go."""
    path = folder / LOCK_FILE
    if _is_open_file(fd, path):
        try:
            os.unlink(path)
        except OSError:
            pass
    os.close(fd)
