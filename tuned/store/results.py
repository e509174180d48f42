"""The results folder, laid out as Ray Tune users know it.

``<storage_path>/<experiment>/`` holds ``trainable-<id>.pkl`` and a folder per trial
with ``params.json``, ``result.json`` (a JSON line per report), ``progress.csv``,
``stdout``, ``stderr``, ``error.txt`` on failure and ``checkpoint_00000N/``.
Rows are written with plain appends before a report is acknowledged, so a
daemon killed right after still has them on disk.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from tuned_client import safedir
from tuned_client.protocol import json_default

_json = msgspec.json.Encoder(enc_hook=json_default)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+\-\[\]()]")
MAX_TAG = 100


def safe_component(text: str) -> str:
    """A single path component: no separators, no '..', never empty."""
    cleaned = _UNSAFE.sub("_", text).strip(".") or "_"
    return cleaned[:MAX_TAG]


def trial_dir_name(trainable: str, trial_id: str, tag: str, date: str) -> str:
    return safe_component(f"{trainable}_{trial_id}_{tag}_{date}")


def experiment_dir(root: Path, name: str) -> Path:
    """Make (or reuse) the experiment's folder ``root/name`` and check it takes files.

    Raises ``OSError`` with a message that says what is wrong, in words a user
    can act on: a link to nowhere, a file in the way, no permission, a full or
    read-only disk; ``safedir.UnsafeFolder`` where another user could swap what
    the trials load there (``tuned_client.safedir``).
    """
    path = root / name
    try:
        path.mkdir(parents=True, exist_ok=True)
        safedir.check(path)  # before anything of ours lands there
        probe = path / ".tuned-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except safedir.UnsafeFolder:
        raise
    except OSError as exc:
        raise OSError(exc.errno, why_not_writable(root, path, exc)) from exc
    return path


def why_not_writable(root: Path, path: Path, exc: OSError) -> str:
    """What stands in the way of writing the experiment folder ``path`` under ``root``."""
    for where in (path, *path.parents):
        if where.is_symlink() and not where.exists():
            return (
                f"{where} is a symbolic link to {os.readlink(where)!r}, which does not exist "
                "(create its target, or choose another storage_path)"
            )
        if where.exists() and not where.is_dir():
            what = "the experiment" if where == path else "the storage path"
            return f"{where} is a file, not a folder: it is in the way of {what}'s folder"
        if where == root:
            break
    base = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if exc.errno == errno.ENOSPC:
        return f"there is no space left on the disk of {base}"
    if exc.errno == errno.EROFS:
        return f"{base} is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOENT):
        return (
            f"this daemon's user (uid {os.getuid()}) cannot create {path.relative_to(base)} "
            f"in {base}"
        )
    return f"cannot write in {path}: {exc.strerror or exc}"


def json_bytes(value: Any) -> bytes:
    return _json.encode(value)


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


FLUSH_BYTES = 64 * 1024  # rows collected past this are written at once
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


class TrialFiles:
    """Appenders for one running trial's result.json and progress.csv.

    The files are opened on the first report, not when the trial starts, as
    plain file descriptors. Rows are written behind: they collect in memory and
    go out in one ``os.write`` per file when ``flush`` is called (the daemon
    does every few milliseconds, at each checkpoint and when the trial ends) or
    when enough has collected, so a trial reporting a thousand times a second
    costs a few writes, not two per row. A write the disk refuses cuts both
    files back to their last whole rows; ``failed`` keeps the error for the
    trial's next report. A trial that never reports gets its (empty, or cut
    back on a retry) files when it closes.
    """

    def __init__(
        self, trial_dir: Path, resume_at: tuple[int, int] = (0, 0), *, fresh: bool = False
    ) -> None:
        """``fresh``: the folder was just made, so there is nothing to cut back or read."""
        self.dir = trial_dir
        self._result_path = trial_dir / "result.json"
        self._csv_path = trial_dir / "progress.csv"
        self._resume_at = resume_at
        self._fresh = fresh
        self.checkpoint_offsets = resume_at
        self._fields: list[str] | None = None
        self._fds: tuple[int, int] | None = None
        self._ends = resume_at  # where each file ends, counting rows not yet written
        self._written = resume_at  # where each file ends on disk
        self._pending = (bytearray(), bytearray())
        self.failed: OSError | None = None
        self.on_pending: Callable[[TrialFiles], None] | None = None  # rows wait for flush
        buf = io.StringIO()
        self._csv = (buf, csv.writer(buf))  # one row at a time, reused
        if not fresh:  # a retry: readers must not see the rows it is about to redo
            for path, size in ((self._result_path, resume_at[0]), (self._csv_path, resume_at[1])):
                _cut_to(path, size, create=False)

    def _open(self) -> tuple[int, int]:
        result = os.open(self._result_path, _APPEND, 0o666)
        try:
            progress = os.open(self._csv_path, _APPEND, 0o666)
        except OSError:
            os.close(result)
            raise
        self._fds = (result, progress)
        if not self._fresh:
            self._ends = self._written = (os.fstat(result).st_size, os.fstat(progress).st_size)
            if self._ends[1]:
                with open(self._csv_path, newline="", encoding="utf-8") as f:
                    self._fields = next(csv.reader(f), None)
        return self._fds

    def append(self, row: dict[str, Any], *, flush: bool = False) -> None:
        """Add a row to both files, written now if ``flush`` (or enough has collected).

        Raises ``OSError`` when the disk refuses a write (now or an earlier one):
        both files then end at their last whole row.
        """
        if self.failed is not None:
            raise self.failed
        if self._fds is None:
            self._open()  # reads the header a resumed progress.csv has
        plain = _is_plain(row)
        flat = row if plain else _flatten(row)
        buf, writer = self._csv
        buf.seek(0)
        buf.truncate()
        fields = self._fields
        if fields is None:
            fields = list(flat)
            writer.writerow(fields)
        # What csv.DictWriter(extrasaction="ignore") writes, without building one per row:
        # a plain row's values are written as they are (csv writes None, or a missing
        # key, as an empty cell), any other goes through _csv_cell.
        if plain:
            writer.writerow(map(flat.get, fields))
        else:
            writer.writerow([_csv_cell(flat[k]) if k in flat else "" for k in fields])
        line = json_bytes(row) + b"\n"
        text = buf.getvalue().encode()
        self._fields = fields
        was_empty = not self._pending[0]
        self._pending[0].extend(line)
        self._pending[1].extend(text)
        self._ends = (self._ends[0] + len(line), self._ends[1] + len(text))
        if flush or len(self._pending[0]) + len(self._pending[1]) >= FLUSH_BYTES:
            self.flush()
        elif was_empty and self.on_pending is not None:
            self.on_pending(self)

    def flush(self) -> None:
        """Write the rows collected so far; on ``OSError`` keep only whole rows and raise."""
        if not self._pending[0] or self._fds is None:
            return
        fds = self._fds
        rows, text = bytes(self._pending[0]), bytes(self._pending[1])
        self._pending[0].clear()
        self._pending[1].clear()
        try:
            _write_all(fds[0], rows)
            _write_all(fds[1], text)
        except OSError as exc:
            _cut(fds[0], self._written[0])
            _cut(fds[1], self._written[1])
            self._ends = self._written
            self.failed = exc
            raise
        self._written = self._ends

    def mark_checkpoint(self) -> None:
        """Remember where the files end now: a retry from this checkpoint resumes here."""
        if self._fds is None:
            self._open()
        self.flush()
        self.checkpoint_offsets = self._written

    def close(self) -> None:
        """Write what is left and close the files (``failed`` says if the disk refused).

        A trial that never reported still leaves both of them.
        """
        with contextlib.suppress(OSError):
            self.flush()
        if self._fds is None:
            with contextlib.suppress(OSError):
                _cut_to(self._result_path, self._resume_at[0], create=True)
                _cut_to(self._csv_path, self._resume_at[1], create=True)
            return
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = None


def _cut_to(path: Path, size: int, *, create: bool) -> None:
    """Cut a file back to ``size`` (a retry resumes where its checkpoint left it)."""
    try:
        os.truncate(path, size)
    except FileNotFoundError:
        if create:
            os.close(os.open(path, _APPEND, 0o666))


def _cut(fd: int, size: int) -> None:
    """Drop a partly written row so the file never holds half of one."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; after a short write the next one raises the real error."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, f"write returned {written}")
        view = view[written:]


_PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def _is_plain(row: dict[str, Any]) -> bool:
    """Whether ``row`` is flat already, with string keys and values csv writes as they are.

    The common case (numbers and strings) then skips ``_flatten`` and
    ``_csv_cell``, which cost more than the rest of a report's handling.
    """
    return _STR.issuperset(map(type, row)) and _PLAIN_VALUES.issuperset(map(type, row.values()))


def _csv_cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json_default(value)


def write_params(trial_dir: Path, config: Any) -> None:
    """``params.json`` as Ray writes it (``json.dumps(indent=2)``), in one ``os.write``.

    The round trip through ``json.loads`` stays: msgspec's own pretty-printer
    spells floats differently (``1e16`` for ``1e+16``), and the file must not change.
    """
    data = json.dumps(json.loads(json_bytes(config)), indent=2).encode()
    fd = os.open(
        os.path.join(trial_dir, "params.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666
    )
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.EFBIG, "short write of params.json")
    finally:
        os.close(fd)


def write_error(trial_dir: Path, error: str, traceback: str) -> None:
    """``error.txt``; a full disk loses the file, not the daemon (the error is in the journal)."""
    with contextlib.suppress(OSError):
        (trial_dir / "error.txt").write_text(traceback or error)
