"""A snapshot of the daemon's state, so the journal holds only what came after it.

A daemon that lives for months sees millions of trials: replaying their whole
history at every start took minutes and gigabytes. A compaction writes the
state as it is (``take``) to ``snapshot.bin`` and begins a new journal (epoch
N+1, ``Journal.begin``); start-up loads the snapshot (``restore``) and replays
only the journals of its epoch and after.

What a snapshot holds is small whatever the history: each experiment's spec
and counters, the trials it holds in memory (unfinished ones), and where each
finished trial's record is in its archive file, 8 bytes a trial. The archive
files themselves are kept across restarts (``ExperimentArchive.attach``), made
durable before the snapshot that points into them.

Crash safety comes from the order of the steps. The old journal is only
renamed (``journal-<epoch>.bin``) when the new one begins, and deleted once the
snapshot is on disk: a crash in between leaves the old snapshot, the old
journal and the new one, which replay to the same state.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from collections import deque
from pathlib import Path

import msgspec
import structlog
from tuned_client.protocol import ExperimentSpec

from ..core.model import Experiment
from ..core.state import Exploit, State
from .archive import Archive, ExperimentArchive, Record, encode_record, trial_from
from .private import write_private

log = structlog.get_logger("tuned.store.snapshot")

VERSION = 1
_record_decoder = msgspec.msgpack.Decoder(Record)


class SavedExperiment(msgspec.Struct, omit_defaults=True):
    id: str
    spec: ExperimentSpec  # without env and sys_path: those are shared (Snapshot.envs)
    env: int  # index into Snapshot.envs (the environment too: the state folder is private)
    sys_path: int  # index into Snapshot.sys_paths
    path: str
    seq: int
    size: int  # trials in all
    live: list[msgspec.Raw]  # store.archive.Record of each trial held in memory
    archived: bytes  # where each trial's record starts in the archive file (-1: in memory)
    queue: list[int]  # indices of the queued trials, in queue order
    running: int = 0
    finished: int = 0
    errors: int = 0
    closed: bool = True
    cancelled: bool = False
    interrupted: bool = False  # its driving script went away (``daemon.drivers``)
    done: bool = False
    started_at: float = 0.0
    trainable: bytes = b""  # an unfinished experiment's, as submitted


class SavedExploit(msgspec.Struct, array_like=True):
    trial_id: str
    config: bytes
    staged: str
    iteration: int
    time_total_s: float


class Snapshot(msgspec.Struct):
    version: int
    epoch: int  # the state when the journal of this epoch began
    seq: int  # the last event seq given out
    exp_seq: int
    experiments: list[SavedExperiment]
    exploits: list[SavedExploit] = []
    # Experiments from one script share its environment and sys.path: each once here.
    envs: list[dict[str, str]] = []
    sys_paths: list[list[str]] = []


_decoder = msgspec.msgpack.Decoder(Snapshot)
_encoder = msgspec.msgpack.Encoder()


def take(state: State, epoch: int, seq: int) -> bytes:
    """The state, encoded: O(experiments and unfinished trials), not O(history)."""
    experiments = []
    envs: dict[int, int] = {}  # id of a shared env (core.state.Interner) -> its index
    paths: dict[int, int] = {}
    env_list: list[dict[str, str]] = []
    path_list: list[list[str]] = []
    for exp in state.experiments.values():
        offsets = _offsets(exp)
        spec = exp.spec
        if id(spec.env) not in envs:
            envs[id(spec.env)] = len(env_list)
            env_list.append(spec.env)
        if id(spec.sys_path) not in paths:
            paths[id(spec.sys_path)] = len(path_list)
            path_list.append(spec.sys_path)
        experiments.append(
            SavedExperiment(
                id=exp.id,
                spec=msgspec.structs.replace(spec, env={}, sys_path=[]),
                env=envs[id(spec.env)],
                sys_path=paths[id(spec.sys_path)],
                path=str(exp.path),
                seq=exp.seq,
                size=len(exp.trials),
                live=[msgspec.Raw(encode_record(t)) for t in exp.live()],
                archived=offsets.tobytes(),
                queue=[t.index for t in exp.queue],
                running=exp.running,
                finished=exp.finished,
                errors=exp.errors,
                closed=exp.closed,
                cancelled=exp.cancelled,
                interrupted=exp.interrupted,
                done=exp.done,
                started_at=exp.started_at,
                trainable=state.trainables.get(exp.id, b""),
            )
        )
    exploits = [
        SavedExploit(tid, bytes(e.config), e.staged, e.iteration, e.time_total_s)
        for tid, e in state.exploits.items()
    ]
    snap = Snapshot(VERSION, epoch, seq, state.exp_seq, experiments, exploits, env_list, path_list)
    return _encoder.encode(snap)


def _offsets(exp: Experiment) -> array[int]:
    offsets = array("q")
    if isinstance(exp.archive, ExperimentArchive):
        offsets = array("q", exp.archive.offsets)
    offsets.extend([-1] * (len(exp.trials) - len(offsets)))
    return offsets


def archives(state: State) -> list[ExperimentArchive]:
    """The archive files a snapshot of ``state`` points into: to be made durable first."""
    return [
        e.archive
        for e in state.experiments.values()
        if isinstance(e.archive, ExperimentArchive) and e.archive.count
    ]


def persist(path: Path, data: bytes, files: list[ExperimentArchive]) -> None:
    """Make the archive files durable, then write the snapshot atomically (a thread's work)."""
    for store in files:
        store.sync()
    write_private(path, data)
    with contextlib.suppress(OSError):  # the rename itself durable too
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load(path: Path) -> Snapshot | None:
    """The snapshot at ``path``, or None if there is none (a first start, or an old daemon)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    snap = _decoder.decode(data)
    if snap.version != VERSION:
        raise ValueError(f"{path} is a snapshot of version {snap.version}, not {VERSION}")
    return snap


def restore(snap: Snapshot, state: State, archive: Archive) -> None:
    """Put the snapshot's experiments and trials into ``state``; finished trials stay on disk."""
    state.exp_seq = snap.exp_seq
    for env in snap.envs:  # shared from now on, as at submit
        state.shared.share_env(env)
    for path in snap.sys_paths:
        state.shared.share_path(path)
    for saved in snap.experiments:
        spec = saved.spec
        spec.env, spec.sys_path = snap.envs[saved.env], snap.sys_paths[saved.sys_path]
        exp = Experiment(saved.id, spec, Path(saved.path), saved.seq)
        exp.closed, exp.cancelled, exp.done = saved.closed, saved.cancelled, saved.done
        exp.interrupted = saved.interrupted
        exp.started_at = saved.started_at
        exp.running, exp.finished, exp.errors = saved.running, saved.finished, saved.errors
        exp.trials = [None] * saved.size
        store = archive.of(exp)
        offsets = array("q")
        offsets.frombytes(saved.archived)
        store.attach(offsets)
        for raw in saved.live:
            record = _record_decoder.decode(raw)
            exp.trials[record.index] = trial_from(exp, record.index, record, store)
        exp.queue = deque(t for t in (exp.trials[i] for i in saved.queue) if t is not None)
        state.experiments[exp.id] = exp
        if saved.trainable:
            state.trainables[exp.id] = saved.trainable
    for e in snap.exploits:
        state.exploits[e.trial_id] = Exploit(
            msgspec.Raw(e.config), e.staged, e.iteration, e.time_total_s
        )
