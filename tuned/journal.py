"""The append-only journal: every accepted experiment and every event, in order.

A record is ``length (4 bytes) | crc32 (4 bytes) | msgpack body``. Appends go
straight to the file with ``os.write`` (so a SIGKILLed daemon loses nothing it
wrote); ``sync`` coalesces fsyncs so that many transitions share one. Reading
stops at the first record that is short or fails its checksum: a torn last
record (power loss mid-write) is skipped and truncated away, never fatal.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
from tuned_client.protocol import Event, ExperimentSpec

_RECORD = struct.Struct(">II")


class Submitted(msgspec.Struct, tag="submitted", tag_field="kind"):
    """An experiment as accepted, with the ids the daemon gave it."""

    experiment_id: str
    path: str
    trial_ids: list[str]
    spec: ExperimentSpec


Record = Submitted | Event
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._dirty = False
        self._lock = anyio.Lock()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def append(self, record: Record) -> None:
        body = _encoder.encode(record)
        os.write(self._fd, _RECORD.pack(len(body), zlib.crc32(body)) + body)
        self._dirty = True

    async def sync(self) -> None:
        """fsync everything appended so far; concurrent callers share one fsync."""
        if not self._dirty:
            return
        async with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            await anyio.to_thread.run_sync(os.fsync, self._fd)

    @staticmethod
    def replay(path: Path) -> Iterator[Record]:
        """Every intact record; a torn or corrupt tail is cut off the file."""
        if not path.exists():
            return
        data = path.read_bytes()
        pos = 0
        while pos + _RECORD.size <= len(data):
            length, crc = _RECORD.unpack_from(data, pos)
            body = data[pos + _RECORD.size : pos + _RECORD.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break
            try:
                record = _decoder.decode(body)
            except msgspec.DecodeError:
                break
            pos += _RECORD.size + length
            yield record
        if pos < len(data):
            with open(path, "r+b") as f:
                f.truncate(pos)
