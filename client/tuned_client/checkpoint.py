"""``tune.Checkpoint``: a folder on local disk, as Ray's Checkpoint is on local storage."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def copy_tree(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy a checkpoint folder with its links as links, or leave nothing behind.

    Following links would copy what they point at: a link to ``/etc`` became
    137 MB of someone else's files in the results, a link to ``/etc/shadow`` a
    readable regular file there, and a dangling one failed the trial. A copy
    that fails part way (a full disk) is removed, so no partial folder remains.
    """
    existed = os.path.lexists(dest)
    try:
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=existed)
    except BaseException:
        if not existed:
            shutil.rmtree(dest, ignore_errors=True)
        raise


class Checkpoint:
    """A directory of files a trial saved; ``from_directory`` / ``as_directory`` like Ray."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> Checkpoint:
        if not Path(path).is_dir():
            raise ValueError(f"Checkpoint.from_directory: {path} is not a directory")
        return cls(path)

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """The checkpoint's folder, read-only by convention (it is the stored copy)."""
        yield self.path

    def to_directory(self, path: str | os.PathLike[str] | None = None) -> str:
        dest = str(path) if path is not None else tempfile.mkdtemp(prefix="checkpoint_")
        copy_tree(self.path, dest)
        return dest

    def __fspath__(self) -> str:
        return self.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"Checkpoint(filesystem=local, path={self.path})"
