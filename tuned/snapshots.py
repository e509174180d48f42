"""Read-only views of the daemon's state, as the protocol's replies carry them.

``tuned status``, ``tuned logs`` and a client rebuilding its results after a
reconnect all read through here; nothing in this module changes state.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import msgspec
from tuned_client import protocol as p
from tuned_client.framing import HEADER

from . import __version__, archive
from .errors import Refused
from .ledger import SCALE
from .trials import Trial

if TYPE_CHECKING:
    from .daemon import Daemon


def status(daemon: Daemon) -> p.StatusReply:
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
        )
        for e in daemon.experiments.values()
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
        trials_in_memory=len(daemon.trials),
    )


def _gpu_mem(daemon: Daemon, index: int) -> int:
    try:
        return daemon.probe.memory_used(index)
    except Exception:
        return 0


def _gpu_util(daemon: Daemon, index: int) -> float:
    try:
        return daemon.probe.utilization(index)
    except Exception:
        return 0.0


def _gpu_total(daemon: Daemon, index: int) -> int:
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


def sample_usage(daemon: Daemon) -> None:
    """Fresh CPU, memory and GPU use of each running trial, for ``tuned status``."""
    for trial in daemon.trials_running():
        if trial.pid:
            daemon.sampler.sample(trial)


def trial_reply(daemon: Daemon, trial_id: str) -> p.TrialReply:
    t = daemon.trials.get(trial_id)
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


def _archived_trial_reply(daemon: Daemon, trial_id: str) -> p.TrialReply:
    """A finished trial the daemon keeps on disk: the same reply, read from its record."""
    found = archive.archived(daemon, trial_id)
    if found is None:
        raise Refused("not_found", f"no trial {trial_id!r} (see `tuned status`)")
    exp, record = found
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


def experiment_frame(daemon: Daemon, exp_id: str, start: int = 0, page_bytes: int = 0) -> bytes:
    """The ``ExperimentReply`` frame, encoded around the trials as the archive holds them.

    Archived trials are copied, not decoded and encoded again, so a large
    experiment costs its bytes, not an object per trial. With ``page_bytes`` the
    reply is a page: the trials from ``start`` until it holds that many bytes (at
    least one trial), and ``next_start`` says where the next page begins; without,
    every trial (what older clients ask for).
    """
    exp = daemon.experiment(exp_id)
    n = len(exp.trials)
    if not 0 <= start <= n:
        raise Refused("bad_request", f"experiment {exp_id} has {n} trials; no page at {start}")
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
    ]
    rows = bytearray()
    count = 0
    for info, _resources in archive.trial_rows(exp, n, start):
        rows += info
        count += 1
        if page_bytes and len(rows) >= page_bytes:
            break
    if start + count < n:
        head.append(("next_start", start + count))
    frame = bytearray(HEADER.size)
    frame += archive.map_header(len(head) + 1)
    for key, value in head:
        frame += archive.encode(key) + archive.encode(value)
    frame += archive.encode("trials") + archive.array_header(count) + rows
    HEADER.pack_into(frame, 0, len(frame) - HEADER.size)
    return bytes(frame)


def experiment_reply(daemon: Daemon, exp_id: str) -> p.ExperimentReply:
    """What ``experiment_frame`` carries, decoded."""
    frame = experiment_frame(daemon, exp_id)
    return msgspec.msgpack.decode(memoryview(frame)[HEADER.size :], type=p.ExperimentReply)
