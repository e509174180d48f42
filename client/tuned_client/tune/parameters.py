"""``tune.with_parameters``' objects: stored once, beside the experiment, not in it.

(``with_parameters`` itself is here too: it takes a ``Trainable`` class as well.)

Ray puts the objects in its object store and lets each trial fetch them. Here
the Tuner pickles the trainable inside ``parameters_folder(experiment_dir)``:
each object whose pickle is larger than ``INLINE_LIMIT`` is written once to
``<experiment>/.parameters/<sha256>.pkl`` (owner-only, atomically: a temporary
name, then a rename) and the pickled trainable holds only its name. So a 16 MB
array makes a trainable of a few hundred bytes, which is what the daemon
journals and what ``Submit`` carries. The name is the content's hash, so two
experiments sharing a folder (same name) never see each other's objects
change under them, and a second ``fit()`` of the same data writes nothing.

In the trial, an object is read from its file the first time the trainable is
called, once per process (a zygote's forks each read their own copy).
Pickled outside ``parameters_folder`` (by hand, or by code that does not know
the experiment's folder), the objects travel inline, as before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import cloudpickle

from .. import safedir
from .resources import resources_of, with_resources
from .trainable import Trainable

PARAMETERS_DIR = ".parameters"
INLINE_LIMIT = 64 * 1024  # smaller pickles stay in the trainable: a file costs more

_folder: ContextVar[Path | None] = ContextVar("tuned_parameters_folder", default=None)
_probing: ContextVar[bool] = ContextVar("tuned_parameters_probing", default=False)


@contextlib.contextmanager
def parameters_left_out() -> Iterator[None]:
    """While active, a pickled trainable leaves its ``with_parameters`` objects out: to
    check, when a Tuner is made, that the trainable itself pickles (as Ray does), at
    no cost for its data."""
    token = _probing.set(True)
    try:
        yield
    finally:
        _probing.reset(token)


@contextlib.contextmanager
def parameters_folder(experiment_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """While active, pickled ``with_parameters`` objects go to ``experiment_dir``'s store."""
    folder = Path(experiment_dir) / PARAMETERS_DIR
    token = _folder.set(folder)
    try:
        yield folder
    finally:
        _folder.reset(token)


def store(folder: Path, blob: bytes) -> Path:
    """Write ``blob`` under its sha256 in ``folder`` unless it is there already."""
    path = folder / f"{hashlib.sha256(blob).hexdigest()}.pkl"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    safedir.check(folder.parent)  # trials unpickle what is here: nobody else may write it
    safedir.check(folder)
    if path.is_file() and path.stat().st_size == len(blob):
        return path
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # one a killed run left
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


class _Stored:
    """An object in the store: its file, read the first time it is needed."""

    _NOT_LOADED: Any = object()

    def __init__(self, path: str) -> None:
        self.path = path
        self._value: Any = self._NOT_LOADED

    def get(self) -> Any:
        if self._value is self._NOT_LOADED:
            with open(self.path, "rb") as f:
                self._value = cloudpickle.load(f)
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Stored, (self.path,))


def _restore(inline: dict[str, Any], stored: dict[str, str]) -> Parameters:
    params = Parameters(inline)
    params._stored = {k: _Stored(v) for k, v in stored.items()}
    return params


class Parameters(Mapping[str, Any]):
    """The keyword objects of ``with_parameters``; a mapping that loads values on access."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._inline = dict(values)
        self._stored: dict[str, _Stored] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._stored:
            return self._stored[key].get()
        return self._inline[key]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._inline, *self._stored])

    def __len__(self) -> int:
        return len(self._inline) + len(self._stored)

    def __reduce__(self) -> tuple[Any, ...]:
        if _probing.get():
            return (_restore, ({}, {}))
        folder = _folder.get()
        inline: dict[str, Any] = {}
        stored = {k: s.path for k, s in self._stored.items()}
        for key, value in self._inline.items():
            blob = cloudpickle.dumps(value) if folder is not None else b""
            if folder is None or len(blob) < INLINE_LIMIT:
                inline[key] = value
            else:
                stored[key] = str(store(folder, blob))
        return (_restore, (inline, stored))


def with_parameters(trainable: Any, **kwargs: Any) -> Any:
    """Pass large objects to every trial once, as ``ray.tune.with_parameters`` does."""
    params = Parameters(kwargs)
    if isinstance(trainable, type) and issubclass(trainable, Trainable):
        bound = type(trainable.__name__, (trainable,), {"__tuned_parameters__": params})
        bound.__module__ = trainable.__module__
        return bound
    if not callable(trainable) or isinstance(trainable, type):
        raise ValueError(
            "`tune.with_parameters() only works with function trainables or classes that "
            f"inherit from `tune.Trainable()`. Got type: {type(trainable)}."
        )
    resources = resources_of(trainable)

    @functools.wraps(trainable)
    def inner(config: dict[str, Any]) -> Any:
        return trainable(config, **params)

    return with_resources(inner, resources) if resources is not None else inner


__all__ = ["INLINE_LIMIT", "PARAMETERS_DIR", "Parameters", "parameters_folder", "with_parameters"]
