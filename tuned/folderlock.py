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

from .trials import Experiment

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


def hold(exp: Experiment) -> bool:
    """Take ``exp``'s folder lock unless it holds it already; False if another holds it."""
    if exp.lock_fd >= 0:
        return True
    fd = take(exp.path)
    if fd is None:
        return False
    exp.lock_fd = fd
    return True


def release(exp: Experiment) -> None:
    if exp.lock_fd >= 0:
        with contextlib.suppress(OSError):
            os.close(exp.lock_fd)  # the flock goes with the last descriptor
        exp.lock_fd = -1


def holder(experiments: list[Experiment], folder: Path) -> Experiment | None:
    """Which of ``experiments`` (live ones of this daemon) runs in ``folder``, if any."""
    for exp in experiments:
        with contextlib.suppress(OSError):
            if exp.lock_fd >= 0 and os.path.samefile(exp.path, folder):
                return exp
    return None
