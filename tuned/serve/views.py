"""Read-only views of the daemon's state, as the protocol's replies carry them.

``tuned status``, ``tuned logs`` and a client rebuilding its results after a
reconnect all read through here; nothing in this module changes state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import anyio
import msgspec
from tuned_client import protocol as p
from tuned_client.framing import HEADER

from .. import __version__
from ..config import Settings
from ..core.ledger import SCALE, Capacity, Ledger
from ..core.model import Experiment, Trial
from ..core.state import State
from ..errors import Refused
from ..run.inventory import GpuProbe
from ..run.monitor import Sampler
from ..store import archive
from ..store.archive import Archive
from .events import EventBus

# A page of GetExperiment stays this far under the frame cap (its head, one more trial).
PAGE_MARGIN = 1 << 20


class Sources(Protocol):
    """What the views read: the daemon's state and the parts that know its machine."""

    settings: Settings
    state: State
    ledger: Ledger
    capacity: Capacity
    probe: GpuProbe
    sampler: Sampler
    archive: Archive
    bus: EventBus
    started_at: float
    recovered: anyio.Event

    def trials_running(self) -> Iterator[Trial]: ...

    def experiment(self, exp_id: str) -> Experiment: ...


def status(daemon: Sources) -> p.StatusReply:
    snap = daemon.ledger.snapshot()
    resources = [
        p.ResourceUse(name="cpu", used=snap.cpu_used / SCALE, total=snap.cpu_total / SCALE),
        p.ResourceUse(name="gpu", used=sum(snap.gpu_used) / SCALE, total=float(len(snap.gpu_used))),
        p.ResourceUse(name="memory", used=snap.memory_used, total=snap.memory_total),
    ]
    resources += [
        p.ResourceUse(name=k, used=snap.custom_used[k] / SCALE, total=v / SCALE)
        for k, v in snap.custom_total.items()
    ]
    gpus = []
    for index, gid in enumerate(daemon.capacity.gpu_ids):
        gpus.append(
            p.GpuShare(
                id=gid,
                used=snap.gpu_used[index] / SCALE,
                memory_used=_gpu_mem(daemon, index),
                memory_total=_gpu_total(daemon, index),
                utilization=_gpu_util(daemon, index),
            )
        )
    # The running ones alone, in submission order: never a walk over every trial.
    running = [
        trial_row(t)
        for t in sorted(daemon.trials_running(), key=lambda t: (t.experiment.seq, t.index))
    ]
    experiments = [
        p.ExperimentRow(
            experiment_id=e.id,
            name=e.spec.name,
            path=str(e.path),
            counts=e.counts(),
            finished=e.done,
            started_at=e.started_at,
            metric=e.spec.metric,
            mode=e.spec.mode,
            interrupted=e.interrupted,
        )
        for e in daemon.state.experiments.values()
    ]
    return p.StatusReply(
        pid=os.getpid(),
        version=__version__,
        socket=str(daemon.settings.socket_path),
        state_dir=str(daemon.settings.state_dir),
        started_at=daemon.started_at,
        resources=resources,
        gpus=gpus,
        experiments=experiments,
        running=running,
        trials_in_memory=daemon.state.trials_in_memory(),
        event_bytes=daemon.bus.held_bytes,
        recovering=not daemon.recovered.is_set(),
    )


def _gpu_mem(daemon: Sources, index: int) -> int:
    try:
        return daemon.probe.memory_used(index)
    except Exception:
        return 0


def _gpu_util(daemon: Sources, index: int) -> float:
    try:
        return daemon.probe.utilization(index)
    except Exception:
        return 0.0


def _gpu_total(daemon: Sources, index: int) -> int:
    devices = daemon.probe.devices()
    return devices[index].memory_total if index < len(devices) else 0


def trial_row(t: Trial) -> p.TrialRow:
    return p.TrialRow(
        trial_id=t.id,
        experiment_id=t.experiment.id,
        name=t.name,
        status=t.status,
        pid=t.pid,
        started_at=t.started_at,
        iteration=t.iteration,
        time_total_s=t.time_total_s,
        resources=t.resources[0] if t.resources else {},
        gpu_ids=t.gpu_ids,
        cpu_percent=float(t.usage.get("cpu_percent", 0.0)),
        rss=int(t.usage.get("rss", 0)),
        attempt=t.attempt,
        gpu_memory=int(t.usage.get("gpu_memory", 0)),
    )


def sample_usage(daemon: Sources) -> None:
    """Fresh CPU, memory and GPU use of each running trial, for ``tuned status``."""
    for trial in daemon.trials_running():
        if trial.pid:
            daemon.sampler.sample(trial)


def trial_reply(daemon: Sources, trial_id: str) -> p.TrialReply:
    t = daemon.state.trial(trial_id)
    if t is None:
        return _archived_trial_reply(daemon, trial_id)
    return p.TrialReply(
        trial_id=t.id,
        experiment_id=t.experiment.id,
        name=t.name,
        status=t.status,
        path=str(t.dir or ""),
        pid=t.pid,
        attempt=t.attempt,
        error=t.error,
    )


def _archived_trial_reply(daemon: Sources, trial_id: str) -> p.TrialReply:
    """A finished trial the daemon keeps on disk: the same reply, read from its record."""
    found = daemon.state.locate(trial_id)
    record = None if found is None else daemon.archive.record(*found)
    if found is None or record is None:
        raise Refused("not_found", f"no trial {trial_id!r} (see `tuned status`)")
    exp = found[0]
    info = archive.info_of(record)
    return p.TrialReply(
        trial_id=info.trial_id,
        experiment_id=exp.id,
        name=info.name,
        status=info.status,
        path=info.path,
        attempt=record.attempt,
        error=info.error,
    )


def experiment_frame(daemon: Sources, exp_id: str, start: int = 0, page_bytes: int = 0) -> bytes:
    """An ``ExperimentReply`` frame: the trials from ``start`` that fit in ``page_bytes``.

    Encoded around the trials as the archive holds them: archived ones are
    copied, not decoded and encoded again, so a large experiment costs its
    bytes, not an object per trial. Rows are added until the page is full
    (always at least one); ``next_start`` says where the next page begins, 0
    when this one reached the end. ``page_bytes`` 0: as much as a frame holds.
    """
    exp = daemon.experiment(exp_id)
    cap = daemon.settings.max_frame_bytes - PAGE_MARGIN
    limit = min(page_bytes, cap) if page_bytes > 0 else cap
    n = len(exp.trials)
    start = max(0, min(start, n))
    head: list[tuple[str, object]] = [
        ("kind", "experiment"),
        ("experiment_id", exp.id),
        ("name", exp.spec.name),
        ("path", str(exp.path)),
        ("finished", exp.done),
        ("seq", daemon.bus.seq),
        ("cancelled", exp.cancelled),
        ("started_at", exp.started_at),
        ("metric", exp.spec.metric),
        ("mode", exp.spec.mode),
        ("interrupted", exp.interrupted),
        ("to_make", exp.to_make),
    ]
    frame = bytearray(HEADER.size)
    frame += archive.map_header(len(head) + 2)
    for key, value in head:
        frame += archive.encode(key) + archive.encode(value)
    frame += archive.encode("trials")
    count_at = len(frame)
    frame += archive.array_header(0)  # the count is set once the page is full
    count, end = 0, n
    for index, (info, _resources) in enumerate(archive.trial_rows(exp, n, start), start):
        if count and len(frame) + len(info) > limit:
            end = index
            break
        frame += info
        count += 1
    frame[count_at : count_at + 5] = archive.array_header(count)
    frame += archive.encode("next_start") + archive.encode(end if end < n else 0)
    HEADER.pack_into(frame, 0, len(frame) - HEADER.size)
    return bytes(frame)


def experiment_reply(daemon: Sources, exp_id: str) -> p.ExperimentReply:
    """What ``experiment_frame`` carries, decoded, every page of it."""
    reply: p.ExperimentReply | None = None
    start = 0
    while True:
        frame = experiment_frame(daemon, exp_id, start)
        page = msgspec.msgpack.decode(memoryview(frame)[HEADER.size :], type=p.ExperimentReply)
        if reply is None:
            reply = page
        else:
            reply.trials.extend(page.trials)
        if not page.next_start:
            reply.next_start = 0
            return reply
        start = page.next_start
