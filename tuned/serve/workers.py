"""Trial processes on the socket: a spare waiting for its trial, a trial's reports.

A worker proves which trial it is (the trial's token), gets its assignment,
then sends reports until it says how it ended. Reports whose answer does not
matter are not acknowledged one by one (``ReportBatcher`` reads them in
batches); a checkpoint's is, once journalled, and so is one the trial waits on
for its client's decision (``decisions``).
"""

from __future__ import annotations

import math
import socket
import time
from typing import Any

import anyio
from anyio.abc import SocketAttribute
from tuned_client import protocol as p

from ..core.model import Trial
from ..errors import Refused
from ..run.forkserver import ForkLauncher
from ..run.launcher import LaunchSpec
from . import access
from .decisions import Held
from .host import Conn


async def serve_spare(conn: Conn, hello: p.SpareHello, peer: access.Peer | None) -> None:
    """A zygote's spare waits here, connected, until a trial is handed to it.

    Closing the connection retires it: a spare that reads end of file before an
    assignment exits quietly.
    """
    launcher = conn.daemon.launcher
    taken = None
    if isinstance(launcher, ForkLauncher) and hello.protocol == p.PROTOCOL_VERSION:
        taken = launcher.adopt(hello, peer.pid if peer is not None else 0)
    if taken is None:
        await conn.error("refused", "no zygote of this daemon asked for that spare")
        return
    zygote, spare = taken
    with anyio.move_on_after(conn.daemon.settings.spare_idle_s):
        await spare.decided.wait()
    launch = spare.launch
    if launch is None:
        zygote.release(spare)
        return
    trial_id, token = launch.env["TUNED_TRIAL_ID"], launch.env["TUNED_TRIAL_TOKEN"]
    await serve_worker(conn, p.WorkerHello(p.PROTOCOL_VERSION, trial_id, token), launch)


async def serve_worker(conn: Conn, hello: p.WorkerHello, launch: LaunchSpec | None = None) -> None:
    """A trial process: its assignment, then its reports until it says how it ended.

    ``launch`` is given for a spare, which learns from the assignment what a
    freshly started process gets from its parent (environment, files, folder).
    """
    daemon = conn.daemon
    trial = daemon.trial(hello.trial_id)
    if trial is None or trial.status != "RUNNING" or hello.token != trial.token:
        await conn.error("refused", f"no running trial {hello.trial_id!r} with that token")
        return
    exp = trial.experiment
    assert trial.dir is not None
    become: dict[str, Any] = {}
    if launch is not None:
        become = {
            "env": launch.env,
            "cwd": launch.cwd,
            "stdout": str(launch.stdout),
            "stderr": str(launch.stderr),
            "checkpoint_index": 0 if launch.fresh_dir else -1,
        }
    await conn.send(
        p.Assignment(
            trial_id=trial.id,
            experiment_id=exp.id,
            trial_name=trial.name,
            trial_dir=str(trial.dir),
            experiment_dir=str(exp.path),
            trainable_path=str(exp.trainable_path),
            sys_path=exp.spec.sys_path,
            config=trial.config,
            checkpoint=trial.checkpoint,
            iteration=trial.checkpoint_iteration,
            time_total_s=trial.checkpoint_time,
            attempt=trial.attempt,
            stop=exp.spec.stop,
            resources=trial.resources,
            tag=trial.tag,
            decide=exp.spec.decide_results,
            **become,
        )
    )
    token = trial.token
    batcher = ReportBatcher(conn)
    try:
        await _serve_reports(conn, trial, token, batcher)
    finally:
        daemon.decisions.worker_gone(trial.id, conn)


async def _serve_reports(conn: Conn, trial: Trial, token: str, batcher: ReportBatcher) -> None:
    daemon = conn.daemon
    exp = trial.experiment
    while True:
        req = await batcher.next_request()
        if req is None or trial.token != token:
            return
        if isinstance(req, p.Report):
            # A report the trial waits on is held for its client's decision while the
            # experiment has a client deciding (``tuned.serve.decisions``).
            decide = req.wait and not trial.stop_requested and daemon.decisions.deciding(exp.id)
            try:
                event = daemon.on_report(trial, req, decide=decide)
            except Refused as exc:
                await conn.error(exc.code, exc.message)
                return
            # Only a report whose answer matters is acknowledged: a checkpoint (the trial
            # waits until it is journalled), a stop, or one the trial waits on. The rest are
            # confirmed together by the Ok to the trial's TrialExit, which comes after them.
            if decide:  # held before any await: the client may decide while we sync
                held = Held(trial.id, exp.id, conn, req.seq, event.seq, bool(req.checkpoint))
                daemon.decisions.hold(held)
            if req.checkpoint:
                await daemon.journal.sync()
            if not decide and (req.checkpoint or trial.stop_requested or req.wait):
                await conn.send(p.ReportAck(seq=req.seq, stop=trial.stop_requested))
        elif isinstance(req, p.TrialExit):
            trial.exit_reported = True
            trial.exit_ok = req.ok
            if not req.ok:
                trial.error, trial.traceback = req.error, req.traceback
            await conn.send(p.Ok())
        else:
            await conn.error("bad_request", f"{type(req).__name__} is not a trial request")
            return


# A trial that streams reports is read in batches: once it has sent
# REPORTS_BEFORE_BATCHING plain reports (no checkpoint) in a row, and while they
# come closer together than REPORT_BATCH_S, its connection is read at most once
# per REPORT_BATCH_S (at once when bytes already wait), so the loop wakes once
# for several reports, not once for each: 8 trials reporting 1,000 results/s in
# all cost the daemon a quarter of a core, most of it in wake-ups and reads.
# REPORT_BATCH_S is as long as a reported row already waited to be written
# (``daemon.RESULT_FLUSH_S``). A request read late waits at most that long, and
# only after such a run of reports: a short trial's end, or a checkpoint among
# the first reports after the last one, is read as soon as it comes.
REPORT_BATCH_S = 0.05
REPORTS_BEFORE_BATCHING = 50
_PEEK = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)  # an int: flag arithmetic costs µs


class ReportBatcher:
    """Reads a trial's requests, waiting a little first while it streams plain reports."""

    def __init__(self, conn: Conn) -> None:
        self._reader = conn.reader
        self._sock: socket.socket = conn.stream.extra(SocketAttribute.raw_socket)
        self._run = 0  # plain reports since the start or the last checkpoint
        self._plain = False  # the last request was a report that needed no answer
        self._read_at = -math.inf  # when the last read from the socket returned
        self._gap = math.inf  # the time between the last two reads from the socket
        self._frames = 0  # requests taken from the last read from the socket

    async def next_request(self) -> p.Request | None:
        if self._reader.buffered:  # the rest of the last read: no system call, no wait
            self._frames += 1
            return self._seen(await self._reader.read_request())
        if self._streaming():
            pause = self._read_at + REPORT_BATCH_S - time.monotonic()
            if pause > 0 and not _has_input(self._sock):
                await anyio.sleep(pause)
        req = await self._reader.read_request()
        now = time.monotonic()
        self._gap, self._read_at, self._frames = now - self._read_at, now, 1
        return self._seen(req)

    def _streaming(self) -> bool:
        """Whether the trial streams plain reports, more than one per REPORT_BATCH_S."""
        return (
            self._plain
            and self._run >= REPORTS_BEFORE_BATCHING
            and (self._frames > 1 or self._gap < REPORT_BATCH_S)
        )

    def _seen(self, req: p.Request | None) -> p.Request | None:
        self._plain = isinstance(req, p.Report) and not req.checkpoint
        self._run = self._run + 1 if self._plain else 0
        return req


def _has_input(sock: socket.socket) -> bool:
    """Whether bytes (or the end of the stream) wait to be read: a peek, never a wait."""
    try:
        sock.recv(1, _PEEK)
    except BlockingIOError:
        return False
    except OSError:  # the peer is gone: the read says how
        return True
    return True
