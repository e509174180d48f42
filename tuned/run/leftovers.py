"""What a dead daemon left running: found in the process table, and killed, and nothing else.

A daemon killed with SIGKILL leaves its trials' processes behind (the leader of
a forked or spawned trial dies with its parent, but whatever it started may
not). The next daemon kills them before it runs the trials again. A pid alone
is not enough to know a process is a trial's: pids are reused. So a process is
taken for a trial's only on evidence:

- it *is* the trial's leader: its pid is the one ``TrialStarted`` recorded and
  it started when the trial did (a reused pid is younger);
- it carries the trial's ``TUNED_TRIAL_ID`` in its environment and started
  after the trial; or
- it is in the leader's process group and started after the trial, and the
  leader is that verified trial leader, or is gone and the process carries this
  daemon's marker (``MARKER``: the state folder, in the environment every trial
  and zygote starts with, so forks of forked trials have it too). A group whose
  leader pid is alive but is not the trial's is someone else's, and so is one
  whose leader is gone and whose processes lack the marker (a reused pid).

And never a process of another uid, nor this daemon. ``select`` decides from a
table of ``Proc`` rows, so tests can hand it any table they like; ``scan``
reads the real one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil
import structlog

log = structlog.get_logger("tuned.run.leftovers")

# Seconds between spawning a trial and journalling TrialStarted, at most; also
# the clock granularity of a process's start time as psutil reads it.
START_SLACK_S = 1.0
# In the environment of every trial and zygote a daemon starts: its state folder.
MARKER = "TUNED_DAEMON_STATE"


@dataclass(frozen=True, slots=True)
class Target:
    """A trial the dead daemon had started: its id, its leader's pid, when it started."""

    trial_id: str
    pid: int
    started: float


@dataclass(frozen=True, slots=True)
class Proc:
    """A row of the process table, as far as ``select`` needs it."""

    pid: int
    pgid: int
    uid: int
    created: float
    zombie: bool = False
    trial_id: str | None = None  # TUNED_TRIAL_ID in its environment, if it has one
    marker: str | None = None  # TUNED_DAEMON_STATE in its environment, if it has one


def select(
    targets: Iterable[Target], table: Iterable[Proc], own_pid: int, own_uid: int, marker: str = ""
) -> list[int]:
    """The pids of ``table`` that belong to one of the ``targets`` (see the module's doc)."""
    by_pid = {t.pid: t for t in targets}
    by_id = {t.trial_id: t for t in by_pid.values()}
    if not by_pid:
        return []
    rows = {r.pid: r for r in table}
    leaders = {pid for pid, t in by_pid.items() if pid in rows and _started_with(rows[pid], t)}
    chosen = []
    for row in rows.values():
        if row.pid == own_pid or row.uid != own_uid or row.zombie:
            continue
        if row.pid in by_pid:
            if row.pid in leaders:
                chosen.append(row.pid)
            continue
        if row.trial_id is not None:
            owner = by_id.get(row.trial_id)
            if owner is not None and row.created >= owner.started - START_SLACK_S:
                chosen.append(row.pid)
            continue  # another trial's, or another daemon's
        group = by_pid.get(row.pgid)
        if group is None or row.created < group.started - START_SLACK_S:
            continue
        orphan = row.pgid not in rows and bool(marker) and row.marker == marker
        if row.pgid in leaders or orphan:  # the trial's group, or its orphans
            chosen.append(row.pid)
    return sorted(chosen)


def _started_with(row: Proc, target: Target) -> bool:
    return abs(row.created - target.started) <= START_SLACK_S


def scan(since: float, own_uid: int, pids: set[int]) -> list[Proc]:
    """The process table's rows that started after ``since``, and those of ``pids`` whenever
    they started (whether a trial leader's pid is alive decides about its group)."""
    table = []
    for proc in psutil.process_iter(["create_time", "status", "uids"]):
        created = proc.info.get("create_time")
        uids = proc.info.get("uids")
        if created is None or uids is None or (created < since and proc.pid not in pids):
            continue
        try:
            pgid = os.getpgid(proc.pid)
        except OSError:
            continue
        env: dict[str, str] = {}
        if uids.real == own_uid:
            with contextlib.suppress(psutil.Error):
                env = proc.environ()
        zombie = proc.info.get("status") == psutil.STATUS_ZOMBIE
        trial_id, marker = env.get("TUNED_TRIAL_ID"), env.get(MARKER)
        table.append(Proc(proc.pid, pgid, uids.real, created, zombie, trial_id, marker))
    return table


def kill_leftovers(targets: list[Target], marker: str = "") -> int:
    """SIGKILL every process of ``targets`` still running; returns how many there were."""
    if not targets:
        return 0
    since = min(t.started for t in targets) - START_SLACK_S
    own_uid = os.getuid()
    table = {row.pid: row for row in scan(since, own_uid, {t.pid for t in targets})}
    found = []
    for pid in select(targets, table.values(), os.getpid(), own_uid, marker):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.create_time() == table[pid].created:  # still the process we looked at
                proc.send_signal(signal.SIGKILL)
                found.append(proc)
    _wait_gone(found, timeout=2.0)
    if found:
        log.info("killed what a dead daemon left running", processes=len(found))
    return len(found)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until each process is gone or a zombie (not our children: no wait() to await)."""
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        still = []
        for proc in pending:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    still.append(proc)
            except psutil.NoSuchProcess:
                pass
        pending = still
        if pending:
            time.sleep(0.01)
