"""The append-only journal: every accepted experiment and every event, in order.

A record is ``length (4 bytes) | crc32 (4 bytes) | msgpack body``. Appends go
straight to the file with ``os.write`` (so a SIGKILLed daemon loses nothing it
wrote), except those appended with ``hold`` (a running trial's results), which
are written together at the end of the loop's turn; ``sync`` coalesces fsyncs
so that many transitions share one. Reading stops at the first record that is
short or fails its checksum: a torn last record (power loss mid-write) is
skipped and truncated away, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import anyio
import msgspec
import structlog
from tuned_client.protocol import Event

from ..core.records import Control, Epoch, Submitted

_RECORD = struct.Struct(">II")
_MAX_HELD_BYTES = 1 << 20  # held records past this are written at once
log = structlog.get_logger("tuned.store.journal")


class JournalUnreadable(Exception):
    """A whole record (its checksum holds) that this version cannot decode.

    Written by another version of tuned (an upgrade or a downgrade), most
    likely. Cutting the journal there would throw away every experiment after
    it, so start-up stops instead and the file is left exactly as it is.
    """

    def __init__(self, path: Path, offset: int, number: int, error: Exception) -> None:
        from .. import __version__

        super().__init__(
            f"the journal {path} holds a record this version of tuned ({__version__}) cannot "
            f"read (record {number} at byte {offset}: {error}). It was probably written by "
            "another version: run that version, or move the journal aside to start afresh "
            "(its experiments are then forgotten; their results folders stay). The journal "
            "was left as it is."
        )


Record = Submitted | Control | Epoch | Event
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def encode_record(record: Record) -> bytes:
    """A record's body: msgpack, the same bytes as an event's frame body on the wire."""
    return _encoder.encode(record)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._size = 0
        self._dirty = False
        self._held: list[bytes] = []  # whole records waiting for the end of the turn
        self._held_bytes = 0
        self._lock = anyio.Lock()
        self.failed: OSError | None = None

    def open(self) -> None:
        """Open for appending; a read-only or full state dir leaves it ``failed``, not fatal."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            self.failed = exc
            log.error("cannot open the journal; refusing new work", error=str(exc))
            return
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def append(self, record: Record) -> None:
        """Append one record, or, if the disk refuses, cut the partial write and stop.

        A journal that cannot be written is never left with a torn record in its
        middle: the file is truncated back to its last whole record, ``failed``
        says why, and the daemon refuses new work while it finishes what it has.
        """
        if self.failed is not None or self._fd < 0:
            return
        self.append_encoded(encode_record(record))

    def append_encoded(self, body: bytes, *, hold: bool = False) -> None:
        """``append`` for a record already encoded with ``encode_record``.

        ``hold``: the record may wait in memory until the end of this turn of the
        event loop, to be written in one ``os.write`` with every other record
        held in the same turn (a trial's reports read together). Records stay in
        order: one appended without ``hold``, ``flush`` and ``sync`` write the
        held ones first. A daemon killed within the turn loses them, so only
        records that recovery can do without may be held (``Daemon.emit``).
        """
        if self.failed is not None or self._fd < 0:
            return
        data = _RECORD.pack(len(body), zlib.crc32(body)) + body
        if hold and self._hold(data):
            return
        if self._held:
            self._held.append(data)
            data = self._take_held()
        self._write(data)

    def flush(self) -> None:
        """Write the held records now."""
        if self._held:
            self._write(self._take_held())

    def _hold(self, data: bytes) -> bool:
        """Keep ``data`` until the end of the turn; False where it must go now."""
        if not self._held:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop to end a turn (recovery, a test): write now
                return False
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= _MAX_HELD_BYTES:
            self.flush()
        return True

    def _take_held(self) -> bytes:
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        return data

    def _write(self, data: bytes) -> None:
        """Write whole records, or, if the disk refuses, cut the partial write and stop."""
        if self.failed is not None or self._fd < 0:
            return
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write to the journal (disk full?)")
        except OSError as exc:
            self.failed = exc
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            log.error("cannot write the journal; refusing new work", error=str(exc))
            return
        self._size += len(data)
        self._dirty = True

    async def sync(self) -> None:
        """fsync everything appended so far; concurrent callers share one fsync."""
        self.flush()
        if not self._dirty:
            return
        async with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            try:
                await anyio.to_thread.run_sync(os.fsync, self._fd)
            except OSError as exc:
                self.failed = exc
                log.error("cannot sync the journal; refusing new work", error=str(exc))

    @property
    def size(self) -> int:
        """Bytes in the journal file (held records not counted)."""
        return self._size

    def begin(self, epoch: int) -> None:
        """Continue in a new, empty journal whose first record says ``epoch``.

        The current file is kept as ``journal-<epoch - 1>.bin`` until the
        snapshot of ``epoch`` is on disk (``store.snapshot``), so that a crash
        in between still has every record, in the old snapshot's journals.
        """
        self.flush()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, retired_path(self.path, epoch - 1))
        self._size = 0
        self.open()
        self.append(Epoch(epoch))

    @staticmethod
    def replay(path: Path) -> Iterator[Record]:
        """Every intact record (see ``replay_encoded``)."""
        return (record for record, _body in Journal.replay_encoded(path))

    @staticmethod
    def replay_encoded(path: Path) -> Iterator[tuple[Record, bytes]]:
        """Every intact record with its body, read a window at a time; a torn tail is cut off.

        The body is the event's frame body too: a replay republishes it as it is.

        A record whose checksum holds but which does not decode is not a torn
        tail: ``JournalUnreadable`` is raised and nothing is cut.
        """
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            return
        with f:
            reader = _Window(f)
            pos = number = 0
            while (head := reader.get(pos, _RECORD.size)) is not None:
                length, crc = _RECORD.unpack(head)
                body = reader.get(pos + _RECORD.size, length)
                if body is None or zlib.crc32(body) != crc:
                    break
                try:
                    record = _decoder.decode(body)
                except msgspec.DecodeError as exc:
                    raise JournalUnreadable(path, pos, number, exc) from exc
                pos += _RECORD.size + length
                number += 1
                yield record, body
            size = os.fstat(f.fileno()).st_size
        if pos < size:
            try:
                with open(path, "r+b") as torn:
                    torn.truncate(pos)
            except OSError as exc:  # a read-only state dir: keep what is whole, cut nothing
                log.error("cannot cut the journal's torn tail", error=str(exc))


_WINDOW = 4 << 20  # bytes read at a time by a replay: memory stays at this, not the file


class _Window:
    """A file read forward through a buffer: ``get`` the bytes at an offset, or None at EOF."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._buf = bytearray()
        self._start = 0  # file offset of _buf[0]

    def get(self, offset: int, n: int) -> bytes | None:
        if offset + n > self._start + len(self._buf):
            del self._buf[: offset - self._start]  # what was read before ``offset`` is done
            self._start = offset
            while len(self._buf) < n:
                chunk = self._f.read(max(_WINDOW, n - len(self._buf)))
                if not chunk:
                    return None
                self._buf += chunk
        at = offset - self._start
        return bytes(self._buf[at : at + n])


def retired_path(path: Path, epoch: int) -> Path:
    """Where a journal goes when a compaction begins the next one: kept until its snapshot."""
    return path.with_name(f"{path.stem}-{epoch}{path.suffix}")
