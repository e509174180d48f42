"""Finished trials live on disk, not in the daemon's memory.

When a trial finishes (TERMINATED or ERROR), what the daemon knows of it is
appended as one record to its experiment's archive file,
``<state_dir>/archive/<experiment id>``, and its ``Trial`` is dropped: the
experiment keeps a ``None`` in its trial list and the record's offset, 16 bytes
a trial, so a million finished trials cost 16 MB instead of gigabytes.
Counts are counters (``Experiment.counts``); ``GetTrial``, ``GetExperiment`` and
``experiment_state.msgpack`` read the records back; ``Tuner.restore`` brings a
trial back into memory (``revive``) to run it again.

A record carries the trial's ``TrialInfo`` and resources already encoded, so
that the replies and the state file copy them as they are, in trial order,
without building a Python object per trial (``trial_rows``).

The files are a cache of the journal, never read across restarts: start-up
empties the directory (``reset``) and archives again what the replay found
finished. A disk that refuses a write leaves that trial in memory, as before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import msgspec
import structlog
from tuned_client import protocol as p

from ..core.ledger import Request, parse_request
from ..core.model import FINAL, Experiment, Trial

log = structlog.get_logger("tuned.store.archive")

_LENGTH = struct.Struct(">I")
MAX_OPEN = 32  # archive files kept open for appending, most recently written first
_WINDOW = 1 << 20  # bytes read at a time when records are read in trial order
_ONE = 4096  # bytes read for a single record (more if it is longer)
_encoder = msgspec.msgpack.Encoder()


class Record(msgspec.Struct, array_like=True):
    """A finished trial: what replies show (``info``) and what running it again needs."""

    info: msgspec.Raw  # p.TrialInfo
    resources: msgspec.Raw  # list[dict[str, float]]: the trial's bundles
    index: int  # checked when read: an offset pointing at another trial's record is a bug
    attempt: int
    failures: int
    started_at: float
    gpu_ids: str
    iteration: int
    time_total_s: float
    checkpoint_iteration: int
    checkpoint_time: float
    checkpoint_offsets: tuple[int, int]
    timed_out: bool
    kept_checkpoints: list[tuple[str, float | None]]
    # Of a trial held in a snapshot (store.snapshot) rather than finished: added later,
    # so with defaults (records of finished trials written before them still decode).
    losses: int = 0
    stop_requested: bool = False
    pid: int = 0  # a RUNNING trial's leader: what recovery kills if the daemon died


_decoder = msgspec.msgpack.Decoder(Record)
_info_decoder = msgspec.msgpack.Decoder(p.TrialInfo)
_bundles_decoder = msgspec.msgpack.Decoder(list[dict[str, float]])


def trial_info(t: Trial) -> p.TrialInfo:
    """A trial as ``GetExperiment`` and ``experiment_state.msgpack`` show it."""
    return p.TrialInfo(
        trial_id=t.id,
        tag=t.tag,
        name=t.name,
        path=str(t.dir or ""),
        status=t.status,
        config=t.config,
        # omitted when None: an empty Raw would encode as nothing at all
        **({"last_result": t.last_result} if t.last_result is not None else {}),
        error=t.error,
        traceback=t.traceback,
        checkpoint=t.checkpoint,
    )


def encode_record(t: Trial) -> bytes:
    return _encoder.encode(
        Record(
            info=msgspec.Raw(_encoder.encode(trial_info(t))),
            resources=msgspec.Raw(_encoder.encode(t.resources)),
            index=t.index,
            attempt=t.attempt,
            failures=t.failures,
            started_at=t.started_at,
            gpu_ids=t.gpu_ids,
            iteration=t.iteration,
            time_total_s=t.time_total_s,
            checkpoint_iteration=t.checkpoint_iteration,
            checkpoint_time=t.checkpoint_time,
            checkpoint_offsets=t.checkpoint_offsets,
            timed_out=t.timed_out,
            kept_checkpoints=t.kept_checkpoints,
            losses=t.losses,
            stop_requested=t.stop_requested,
            pid=t.pid,
        )
    )


class ExperimentArchive:
    """One experiment's archive file, and where each archived trial's record starts."""

    def __init__(self, path: Path, pool: OpenFiles) -> None:
        self.path = path
        self.pool = pool
        self.offsets = array("q")  # by trial index; -1: the trial is in memory
        self.count = 0  # trials archived now
        self.failed: OSError | None = None
        self._fd = -1
        self._created = False
        self._size = 0
        # Revived trials with the same bundles share one list and one Request, as
        # trials submitted together do (the scheduler tries each Request once a pass).
        self._shared: dict[bytes, tuple[list[dict[str, float]], Request]] = {}

    def attach(self, offsets: array[int]) -> None:
        """Continue a file an earlier daemon kept (``store.snapshot``): its records stay.

        ``offsets`` point at records written before the snapshot; records the
        earlier daemon appended after it are past them and never read. New ones
        go at the file's real end.
        """
        self.offsets = offsets
        self.count = len(offsets) - offsets.count(-1)
        self._created = True  # not truncated at the next open
        try:
            self._size = os.stat(self.path).st_size
        except FileNotFoundError:
            self._size = 0
            if self.count:
                log.error("an archive file of the snapshot is missing", path=str(self.path))

    def sync(self) -> None:
        """Make every record appended so far durable (before a snapshot points at them)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def holds(self, index: int) -> bool:
        return index < len(self.offsets) and self.offsets[index] >= 0

    def put(self, index: int, record: bytes) -> bool:
        """Append a trial's record; False (and nothing half-written) if the disk refuses."""
        data = _LENGTH.pack(len(record)) + record
        try:
            if self._fd < 0:
                self._open()
            self.pool.used(self)
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(28, "short write to the trial archive (disk full?)")
        except OSError as exc:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
            if self.failed is None:  # said once per experiment: it may recur per trial
                log.warning(
                    "cannot archive finished trials; they stay in memory",
                    path=str(self.path),
                    error=str(exc),
                )
            self.failed = exc
            return False
        if index >= len(self.offsets):
            self.offsets.extend([-1] * (index + 1 - len(self.offsets)))
        self.offsets[index] = self._size
        self._size += len(data)
        self.count += 1
        return True

    def _open(self) -> None:
        """Truncated at the first open: whatever an earlier daemon left is not ours to read.

        Few files stay open at once (``MAX_OPEN``): the least recently written is
        closed, to be opened again at its next append.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        if not self._created:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            flags |= os.O_TRUNC
        self._fd = os.open(self.path, flags, 0o600)
        self._created = True
        self.pool.opened(self)

    def forget(self, index: int) -> None:
        """The trial is back in memory; its old record stays in the file, unread."""
        self.offsets[index] = -1
        self.count -= 1

    def read(self, index: int) -> Record:
        with self.scan(window=_ONE) as reader:
            record = reader.record(self.offsets[index])
        assert record.index == index, f"{self.path}: record of trial {record.index}, not {index}"
        return record

    @contextlib.contextmanager
    def scan(self, window: int = _WINDOW) -> Iterator[_Reader]:
        """A reader of this file's records (its own descriptor: appends go on meanwhile)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield _Reader(fd, window)
        finally:
            os.close(fd)

    def shared(self, resources: bytes) -> tuple[list[dict[str, float]], Request]:
        if resources not in self._shared:
            bundles = _bundles_decoder.decode(resources)
            self._shared[resources] = (bundles, parse_request(bundles))
        return self._shared[resources]

    def close(self) -> None:
        """No more appends for now (the experiment finished); reads open the file themselves."""
        self.pool.closed(self)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class OpenFiles:
    """The archive files kept open for appending, most recently written last.

    Few stay open at once (``MAX_OPEN``): the least recently written is closed,
    to be opened again at its next append.
    """

    def __init__(self, limit: int = MAX_OPEN) -> None:
        self.limit = limit
        self._open: OrderedDict[int, ExperimentArchive] = OrderedDict()

    def opened(self, archive: ExperimentArchive) -> None:
        self._open[id(archive)] = archive
        while len(self._open) > self.limit:
            self._open.popitem(last=False)[1].close()

    def used(self, archive: ExperimentArchive) -> None:
        self._open.move_to_end(id(archive))

    def closed(self, archive: ExperimentArchive) -> None:
        self._open.pop(id(archive), None)


class _Reader:
    """Records by offset through a window of the file: one read per megabyte in order."""

    def __init__(self, fd: int, window: int) -> None:
        self._fd = fd
        self._window = window
        self._base = 0
        self._buf = memoryview(b"")

    def record(self, offset: int) -> Record:
        start = offset - self._base
        if start < 0 or start + _LENGTH.size > len(self._buf):
            self._load(offset, _LENGTH.size)
            start = 0
        (length,) = _LENGTH.unpack_from(self._buf, start)
        end = start + _LENGTH.size + length
        if end > len(self._buf):
            self._load(offset, _LENGTH.size + length)
            start, end = 0, _LENGTH.size + length
        return _decoder.decode(self._buf[start + _LENGTH.size : end])

    def _load(self, offset: int, need: int) -> None:
        data = os.pread(self._fd, max(self._window, need), offset)
        if len(data) < need:
            raise OSError(f"trial archive record at {offset} is cut short")
        self._base, self._buf = offset, memoryview(data)


# ------------------------------------------------------------------ every experiment's archive


class Archive:
    """Where finished trials go: a file per experiment under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = OpenFiles()

    def reset(self) -> None:
        """Start-up: the files of an earlier daemon are stale; the journal is the truth."""
        shutil.rmtree(self.root, ignore_errors=True)

    def of(self, exp: Experiment) -> ExperimentArchive:
        """The experiment's archive file (created on first use)."""
        if exp.archive is None:
            exp.archive = ExperimentArchive(self.root / exp.id, self.pool)
        assert isinstance(exp.archive, ExperimentArchive)
        return exp.archive

    def evict(self, trial: Trial) -> bool:
        """Move a finished trial from memory to its experiment's archive; False if it stays."""
        exp = trial.experiment
        if trial.status not in FINAL or exp.trials[trial.index] is not trial:
            return False
        if not self.of(exp).put(trial.index, encode_record(trial)):
            return False
        exp.trials[trial.index] = None
        return True

    def evict_finished(self, exp: Experiment) -> None:
        """Archive every finished trial of ``exp`` still in memory (after recovery)."""
        for trial in list(exp.live()):
            if trial.status in FINAL:
                self.evict(trial)
        if exp.done and exp.archive is not None:
            self.of(exp).close()

    def record(self, exp: Experiment, index: int) -> Record | None:
        """The record of a finished trial no longer in memory, if it is one."""
        if exp.trials[index] is not None or exp.archive is None or not exp.archive.holds(index):
            return None
        return self.of(exp).read(index)

    def revive(self, exp: Experiment, index: int) -> Trial:
        """Bring an archived trial back into memory, as it was when it finished."""
        live = exp.trials[index]
        if live is not None:
            return live
        store = self.of(exp)
        trial = trial_from(exp, index, store.read(index), store)
        store.forget(index)
        exp.trials[index] = trial
        return trial


def info_of(record: Record) -> p.TrialInfo:
    return _info_decoder.decode(record.info)


def trial_from(exp: Experiment, index: int, record: Record, store: ExperimentArchive) -> Trial:
    """The ``Trial`` a record holds, for ``exp``'s trial ``index``."""
    info = info_of(record)
    resources, request = store.shared(bytes(record.resources))
    return Trial(
        id=info.trial_id,
        index=index,
        tag=info.tag,
        experiment=exp,
        config=msgspec.Raw(bytes(info.config)),
        request=request,
        resources=resources,
        status=info.status,
        dir=Path(info.path) if info.path else None,
        attempt=record.attempt,
        failures=record.failures,
        started_at=record.started_at,
        gpu_ids=record.gpu_ids,
        iteration=record.iteration,
        time_total_s=record.time_total_s,
        last_result=msgspec.Raw(bytes(info.last_result)) if len(info.last_result) else None,
        checkpoint=info.checkpoint,
        checkpoint_iteration=record.checkpoint_iteration,
        checkpoint_time=record.checkpoint_time,
        checkpoint_offsets=record.checkpoint_offsets,
        error=info.error,
        traceback=info.traceback,
        timed_out=record.timed_out,
        kept_checkpoints=[(path, score) for path, score in record.kept_checkpoints],
        losses=record.losses,
        stop_requested=record.stop_requested,
        pid=record.pid,
    )


def trial_rows(
    exp: Experiment, n: int, start: int = 0
) -> Iterator[tuple[bytes | msgspec.Raw, bytes | msgspec.Raw]]:
    """Trials ``start`` to ``n``: their encoded ``TrialInfo`` and resources, in trial order.

    In-memory trials are encoded now; archived ones are copied from their
    records, read a window at a time, so the cost is a slice per trial and the
    memory a window, however many trials there are. Each trial is read when
    its turn comes: the daemon may go on between two rows (a state file
    written in steps), and every row is then that trial as it was at its turn.
    """
    with contextlib.ExitStack() as stack:
        reader: _Reader | None = None
        for index in range(start, n):
            t = exp.trials[index]
            if t is not None:
                yield _encoder.encode(trial_info(t)), _encoder.encode(t.resources)
                continue
            store = exp.archive
            assert isinstance(store, ExperimentArchive)
            if reader is None:
                reader = stack.enter_context(store.scan())
            record = reader.record(store.offsets[index])
            yield record.info, record.resources


# ------------------------------------------------------------------ msgpack by hand


def map_header(n: int) -> bytes:
    return b"\xdf" + n.to_bytes(4, "big")


def array_header(n: int) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big")


def encode(value: object) -> bytes:
    return _encoder.encode(value)
