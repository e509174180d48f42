"""Whether another local user could change what lands in, or is loaded from, a folder.

An experiment's folder holds what its trials load and run: the pickled
trainable, ``with_parameters`` objects, checkpoints the trainable unpickles.
On a shared ``storage_path`` (``/tmp/results``, a team disk) another user can
create ``<storage_path>/<name>`` first, or a link by that name, and swap those
files between the write and the load: their code then runs as you. So before
anything is written there, the folder must

- belong to this user and not be writable by every user;
- sit under folders where nobody else can rename it away: no folder above it
  writable by every user unless it is sticky (as ``/tmp`` is);
- be reached through no link that someone else owns (they could point it
  elsewhere later).

A folder writable by its group is accepted: a team disk shared on purpose
trusts its group.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


class UnsafeFolder(PermissionError):
    """Another user could change the folder's content or what its path leads to."""


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def unsafe_reason(path: Path) -> str | None:
    """Why ``path`` (an existing folder) is not safe to keep code in, or None if it is."""
    me = os.getuid()
    real = Path(os.path.realpath(path))
    st = os.stat(real)
    if st.st_uid != me:
        return (
            f"{path} belongs to {_who(st.st_uid)}, not to you ({_who(me)}): its owner "
            f"could replace what the trials load with code of theirs"
        )
    if st.st_mode & stat.S_IWOTH:
        return (
            f"{path} is writable by every user (mode {stat.S_IMODE(st.st_mode):04o}): anyone "
            f"could replace what the trials load (chmod o-w {path})"
        )
    for folder in (*path.absolute().parents, *real.parents):
        mode = os.stat(folder).st_mode
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            return (
                f"{folder} is writable by every user and not sticky (mode "
                f"{stat.S_IMODE(mode):04o}): anyone could rename {path} away and put "
                f"a folder of theirs in its place (chmod +t {folder}, or another storage_path)"
            )
    for link in (path.absolute(), *path.absolute().parents):
        lst = os.lstat(link)
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (me, 0):
            return (
                f"{link} is a link owned by {_who(lst.st_uid)}, who could point it at a "
                f"folder of theirs"
            )
    return None


def check(path: Path) -> None:
    """Raise ``UnsafeFolder`` where ``unsafe_reason`` finds one."""
    reason = unsafe_reason(path)
    if reason is not None:
        raise UnsafeFolder(f"refusing to keep an experiment in {path}: {reason}")
