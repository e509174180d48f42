"""The state folder is the daemon's private room: everything in it is owner-only.

It holds the journal (every experiment's environment, API tokens and all), the
archive, the logs, the pid and lock files. It is made 0700 by whoever creates
it first (``tuned start``, the daemon itself, a client that auto-starts one),
files in it are created 0600, and a daemon starting on a folder that an older
version left open closes it again (``tighten``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) with the last folder 0700, or make it 0700.

    Refuses a folder that belongs to another uid: what we would write there is
    theirs to read. Links are followed (a state folder may live on another disk).
    """
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise PermissionError(
            f"{path} belongs to uid {st.st_uid}, not to us; refusing to keep private state there"
        )
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT) -> int:
    """A descriptor on ``path``, created 0600 if it is new."""
    return os.open(path, flags | os.O_CLOEXEC, FILE_MODE)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a 0600 temporary file, synced, renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def rotate(path: Path, limit: int, keep: int = 2) -> None:
    """Move ``path`` to ``path.1`` (and so on, ``keep`` old ones) once it passes ``limit`` bytes."""
    try:
        if path.stat().st_size < limit:
            return
    except FileNotFoundError:
        return
    for n in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        newer = path.with_name(f"{path.name}.{n - 1}") if n > 1 else path
        with contextlib.suppress(FileNotFoundError):
            os.replace(newer, older)


def tighten(root: Path) -> int:
    """Take group and other access off everything under ``root``; how many were changed.

    Links are left alone (their target is not ours to change). A read-only
    folder keeps what it has: the daemon still serves from it.
    """
    changed = 0
    for folder, _dirs, files in os.walk(root):  # each folder is visited in its turn
        for name in (*files, ""):
            path = os.path.join(folder, name) if name else folder
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode) or not stat.S_IMODE(st.st_mode) & 0o077:
                    continue
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
                changed += 1
    return changed
