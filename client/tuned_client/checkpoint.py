"""``tune.Checkpoint``: a folder on local disk, as Ray's Checkpoint is on local storage."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
        shutil.copytree(self.path, dest, dirs_exist_ok=True)
        return dest

    def __fspath__(self) -> str:
        return self.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"Checkpoint(filesystem=local, path={self.path})"
