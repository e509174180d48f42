"""One live experiment per folder, whatever path names it and whichever daemon runs it.

Two live experiments in one folder share ``experiment_state.msgpack``: the last
to write it wins, and ``Tuner.restore(folder)`` then resumes the other one, with
its code. Comparing paths is not enough: ``storage_path`` may name the folder
through a link or another mount, and a second daemon (another state folder)
knows nothing of the first one's experiments. So a live experiment holds an
exclusive ``flock`` on ``<folder>/.tuned.lock`` from submit (or resume, or
recovery) until it finishes; a second one finds it held and is refused.
The lock dies with the process: a crashed daemon leaves nothing to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = ".tuned.lock"


def take(folder: Path) -> int | None:
    """A descriptor holding the folder's lock, or None if someone else holds it."""
    fd = os.open(
        folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


class FolderLocks:
    """The folder locks this daemon holds, by experiment id: one owner for them all."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Path, int]] = {}

    def keep(self, exp_id: str, folder: Path, fd: int) -> None:
        """Hold ``fd`` (from ``take``) for the experiment until ``release``."""
        self._held[exp_id] = (folder, fd)

    def hold(self, exp_id: str, folder: Path) -> bool:
        """Take the experiment's folder lock unless it is held already; False if another has it."""
        if exp_id in self._held:
            return True
        fd = take(folder)
        if fd is None:
            return False
        self._held[exp_id] = (folder, fd)
        return True

    def release(self, exp_id: str) -> None:
        held = self._held.pop(exp_id, None)
        if held is not None:
            with contextlib.suppress(OSError):
                os.close(held[1])  # the flock goes with the last descriptor

    def holder(self, folder: Path) -> str | None:
        """Which experiment of this daemon holds ``folder``, if one does."""
        for exp_id, (path, _fd) in self._held.items():
            with contextlib.suppress(OSError):
                if os.path.samefile(path, folder):
                    return exp_id
        return None
