"""The socket side: handshake, one handler per request, event streams, trial workers.

Each connection is a task. A frame that is too large, undecodable or of the
wrong type gets an ``Error`` naming what was wrong, then the connection is
closed; nothing else in the daemon is affected.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from tuned_client import protocol as p

from . import __version__, access, exploit, snapshots
from .daemon import Daemon
from .decisions import Held
from .errors import Refused
from .events import Subscriber
from .forkserver import ForkLauncher
from .launcher import LaunchSpec
from .wire import FrameError, FrameReader, encode_frame

log = structlog.get_logger("tuned.server")


class Conn:
    """A connection's stream with serialized writes (replies and events share it)."""

    def __init__(self, stream: SocketStream, daemon: Daemon) -> None:
        self.stream = stream
        self.daemon = daemon
        self.reader = FrameReader(stream, daemon.settings.max_frame_bytes)
        self._write = anyio.Lock(fast_acquire=True)  # no trip round the loop when free

    async def send(self, message: Any) -> None:
        await self.send_frame(encode_frame(message))

    async def send_frame(self, frame: bytes) -> None:
        async with self._write:
            await self.stream.send(frame)

    async def error(self, code: p.ErrorCode, message: str) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await self.send(p.Error(code=code, message=message))


def peer_uid(stream: SocketStream) -> int | None:
    peer = access.peer_creds(stream.extra(SocketAttribute.raw_socket))
    return None if peer is None else peer.uid


async def handle_connection(daemon: Daemon, stream: SocketStream) -> None:
    conn = Conn(stream, daemon)
    settings = daemon.settings
    peer = access.peer_creds(stream.extra(SocketAttribute.raw_socket))
    gate = access.gate_for(daemon, settings)
    daemon.connections += 1
    daemon.touch()
    try:
        async with stream:
            refused = access.check(settings, peer)
            if refused is not None:
                await conn.error("refused", refused)
                return
            limit = gate.enter(peer)
            if limit is not None:
                held = gate.log_throttle.allow(limit.split(":")[0])  # a burst: a line a second
                if held is not None:
                    log.warning("connection refused", reason=limit, held_back=held)
                await conn.error("refused", limit)
                return
            try:
                await _serve(conn, peer)
            except Exception as exc:  # a bad peer or a bug costs one connection, never the daemon
                await _report_failure(conn, _leaf(exc))
            finally:
                gate.leave(peer)  # before the close: a client that saw EOF may reconnect
    finally:
        daemon.connections -= 1
        daemon.touch()


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside the exception groups that task groups wrap it in."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _report_failure(conn: Conn, exc: BaseException) -> None:
    if isinstance(exc, FrameError):
        await conn.error("bad_request", str(exc))
    elif isinstance(exc, msgspec.ValidationError):
        await conn.error("bad_request", f"ill-typed message: {exc}")
    elif isinstance(exc, msgspec.DecodeError):
        await conn.error("bad_request", f"undecodable message: {exc}")
    elif isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError | OSError):
        return
    else:
        log.error("connection handler failed", exc_info=exc)
        await conn.error("internal", f"internal error: {type(exc).__name__}: {exc}")


def _bytes_waiting(stream: SocketStream) -> bool:
    """Whether the peer has sent bytes we have not read yet (a peek, never a wait)."""
    sock = stream.extra(SocketAttribute.raw_socket)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # BlockingIOError: nothing there; or the peer is gone
        return False


async def _serve(conn: Conn, peer: access.Peer | None = None) -> None:
    daemon = conn.daemon
    first: p.Request | None = None
    timeout = daemon.settings.handshake_timeout_s
    with anyio.move_on_after(timeout) as waited:
        first = await conn.reader.read_request()
    if waited.cancelled_caught and not conn.reader.buffered and _bytes_waiting(conn.stream):
        # The hello came in time but the loop got to it late (it was busy for longer
        # than the timeout): nothing of it was read, and it waits whole or in part.
        # Closing now, with the hello unread, is what resets the client's connection
        # (ECONNRESET): read it instead. A peer that sent part of a frame in time and
        # no more (a slow-loris) has had its bytes read: it gets no second window.
        with anyio.move_on_after(timeout):
            first = await conn.reader.read_request()
    if first is None:
        if waited.cancelled_caught:
            await conn.error("bad_request", f"no hello within {timeout:g} s; closing")
        return
    if isinstance(first, p.WorkerHello):
        await serve_worker(conn, first)
        return
    if isinstance(first, p.SpareHello):
        await serve_spare(conn, first, peer)
        return
    if not isinstance(first, p.Hello):
        await conn.error("bad_request", f"expected a hello first, got {type(first).__name__}")
        return
    if first.protocol != p.PROTOCOL_VERSION:
        await conn.error(
            "incompatible",
            f"client speaks protocol {first.protocol}, this daemon ({__version__}) speaks "
            f"{p.PROTOCOL_VERSION}: install matching tuned and tuned-client versions",
        )
        return
    await conn.send(
        p.Welcome(protocol=p.PROTOCOL_VERSION, daemon_version=__version__, pid=os.getpid())
    )
    gate = access.gate_for(daemon, daemon.settings)
    subscribed = False
    try:
        async with anyio.create_task_group() as tg:
            while True:
                request = await _next_request(conn, gate, peer, subscribed)
                if request is None:
                    break
                if isinstance(request, p.Subscribe) and not subscribed:
                    subscribed = True  # a subscriber waits for events: never idle
                    gate.subscribe(peer, +1)
                handler = HANDLERS.get(type(request))
                if handler is None:
                    await conn.error(
                        "bad_request", f"{type(request).__name__} is not a client request"
                    )
                    break
                try:
                    await handler(conn, request, tg)
                except Refused as exc:
                    await conn.error(exc.code, exc.message)
            tg.cancel_scope.cancel()
    finally:
        if subscribed:
            gate.subscribe(peer, -1)
        with anyio.CancelScope(shield=True):  # trials must not wait on a client that is gone
            for held in daemon.decisions.decider_gone(conn):
                await release(daemon, held, stop=False)


async def _next_request(
    conn: Conn, gate: access.Gate, peer: access.Peer | None, subscribed: bool
) -> p.Request | None:
    """The next request, or None at its end or once the connection has idled too long.

    Subscribers and connections of a process that follows an experiment are
    exempt; any other handshaken connection quiet for ``idle_connection_timeout_s``
    is told why and closed, so leaked connections cannot pile up.
    """
    idle_s = conn.daemon.settings.idle_connection_timeout_s
    while True:
        limit = math.inf if subscribed or idle_s <= 0 else idle_s
        with anyio.move_on_after(limit) as idle:
            return await conn.reader.read_request()
        if idle.cancelled_caught and not gate.exempt(peer):
            await conn.error(
                "refused",
                f"connection closed after {idle_s:g} s without a request "
                "(idle_connection_timeout_s); reconnect to go on",
            )
            return None


# ------------------------------------------------------------------ client requests


async def on_submit(conn: Conn, req: p.Submit, tg: TaskGroup) -> None:
    accepted = conn.daemon.submit(req.experiment)
    if req.experiment.decide_results:
        conn.daemon.decisions.add_decider(accepted.experiment_id, conn)
    await conn.daemon.journal.sync()
    await conn.send(accepted)


async def on_add_trials(conn: Conn, req: p.AddTrials, tg: TaskGroup) -> None:
    reply = conn.daemon.add_trials(req.experiment_id, req.trials)
    await conn.daemon.journal.sync()
    await conn.send(reply)


async def on_close(conn: Conn, req: p.CloseExperiment, tg: TaskGroup) -> None:
    conn.daemon.close_experiment(req.experiment_id)
    await conn.send(p.Ok())


async def on_cancel(conn: Conn, req: p.Cancel, tg: TaskGroup) -> None:
    conn.daemon.cancel(req.target)
    await conn.send(p.Ok())


async def on_status(conn: Conn, req: p.GetStatus, tg: TaskGroup) -> None:
    snapshots.sample_usage(conn.daemon)
    await conn.send(snapshots.status(conn.daemon))


async def on_get_experiment(conn: Conn, req: p.GetExperiment, tg: TaskGroup) -> None:
    # Encoded around the trials as their archive holds them: no object per trial.
    await conn.send_frame(snapshots.experiment_frame(conn.daemon, req.experiment_id))


async def on_get_trial(conn: Conn, req: p.GetTrial, tg: TaskGroup) -> None:
    await conn.send(snapshots.trial_reply(conn.daemon, req.trial_id))


async def on_stop_trial(conn: Conn, req: p.StopTrial, tg: TaskGroup) -> None:
    conn.daemon.stop_trial(req.trial_id)
    held = conn.daemon.decisions.take(req.trial_id)
    if held is not None:
        await release(conn.daemon, held, stop=True)
    await conn.send(p.Ok())


async def on_decide(conn: Conn, req: p.Decide, tg: TaskGroup) -> None:
    """The client decided on a result its trial waits on; no reply (see ``tuned.decisions``)."""
    daemon = conn.daemon
    if req.stop:
        with contextlib.suppress(Refused):  # it has ended meanwhile
            daemon.stop_trial(req.trial_id)
    held = daemon.decisions.take(req.trial_id, req.seq)
    if held is not None:
        trial = daemon.trials.get(req.trial_id)
        await release(daemon, held, stop=req.stop or (trial is not None and trial.stop_requested))


async def release(daemon: Daemon, held: Held, *, stop: bool) -> None:
    """Let a trial waiting on a decision go on (or stop), its checkpoint on disk first."""
    if held.checkpoint:
        await daemon.journal.sync()
    worker: Conn = held.worker
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await worker.send(p.ReportAck(seq=held.report_seq, stop=stop))


async def on_restart_trial(conn: Conn, req: p.RestartTrial, tg: TaskGroup) -> None:
    exploit.restart_trial(conn.daemon, req.trial_id, req.config, req.checkpoint, req.resources)
    await conn.daemon.journal.sync()
    await conn.send(p.Ok())


async def on_resume(conn: Conn, req: p.ResumeExperiment, tg: TaskGroup) -> None:
    accepted = conn.daemon.resume(req)
    await conn.daemon.journal.sync()
    await conn.send(accepted)


async def on_shutdown(conn: Conn, req: p.Shutdown, tg: TaskGroup) -> None:
    await conn.send(p.Ok())
    conn.daemon.request_shutdown()


async def on_subscribe(conn: Conn, req: p.Subscribe, tg: TaskGroup) -> None:
    daemon = conn.daemon
    if req.experiment_id:
        daemon.experiment(req.experiment_id)  # refuse unknown ids
        if req.decide:
            daemon.decisions.add_decider(req.experiment_id, conn)
    sub = daemon.bus.subscribe(req.experiment_id)
    backlog = daemon.bus.history_after(req.since, req.experiment_id) if req.since >= 0 else None
    if req.since >= 0 and backlog is None:
        daemon.bus.unsubscribe(sub)
        await conn.send(p.Lagged(last_seq=req.since))
        return
    tg.start_soon(stream_events, conn, sub, list(backlog or ()), req.since)


async def stream_events(
    conn: Conn, sub: Subscriber, backlog: list[tuple[int, bytes]], since: int
) -> None:
    """Send the backlog, then live events; catch up from history after lagging.

    Whatever is queued when the task wakes goes out as one write: one syscall
    and one wake-up of the reader for a burst of events, not one per event. The
    bus paces the deliveries (``events.DELIVERY_S``), so a busy stream wakes this
    task at most once per interval and every subscriber writes in the same turn.
    """
    daemon = conn.daemon
    last = since
    try:
        last = await _send_batch(conn, backlog, last)
        while True:
            if sub.queue:
                batch = list(sub.queue)
                sub.queue.clear()
                last = await _send_batch(conn, batch, last)
            if sub.lagging:
                missed = daemon.bus.history_after(last, sub.experiment_id)
                if missed is None:
                    await conn.send(p.Lagged(last_seq=last))
                    return
                sub.lagging = False
                last = await _send_batch(conn, list(missed), last)
                continue
            await sub.wait()
    finally:
        daemon.bus.unsubscribe(sub)


_MAX_BATCH_BYTES = 1 << 20  # a huge backlog goes out in pieces, so replies interleave
_frame_of = operator.itemgetter(1)  # of a (seq, frame) pair


async def _send_batch(conn: Conn, frames: list[tuple[int, bytes]], last: int) -> int:
    """Send the frames after ``last`` in as few writes as fit; return the last seq sent.

    The journal is written first: no event leaves the daemon before its record
    (a results record may be held for the turn, ``Daemon.emit``).
    """
    conn.daemon.journal.flush()
    if not frames:
        return last
    if frames[0][0] > last:  # in seq order, none sent yet: the usual live batch
        data = b"".join(map(_frame_of, frames))
        if len(data) < _MAX_BATCH_BYTES:
            await conn.send_frame(data)
            return frames[-1][0]
    chunk: list[bytes] = []
    size = 0
    for seq, frame in frames:
        if seq <= last:
            continue
        chunk.append(frame)
        size += len(frame)
        last = seq
        if size >= _MAX_BATCH_BYTES:
            await conn.send_frame(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        await conn.send_frame(chunk[0] if len(chunk) == 1 else b"".join(chunk))
    return last


Handler = Callable[[Conn, Any, TaskGroup], Awaitable[None]]
HANDLERS: dict[type, Handler] = {
    p.Submit: on_submit,
    p.AddTrials: on_add_trials,
    p.CloseExperiment: on_close,
    p.Cancel: on_cancel,
    p.GetStatus: on_status,
    p.GetExperiment: on_get_experiment,
    p.Shutdown: on_shutdown,
    p.Subscribe: on_subscribe,
    p.GetTrial: on_get_trial,
    p.StopTrial: on_stop_trial,
    p.RestartTrial: on_restart_trial,
    p.ResumeExperiment: on_resume,
    p.Decide: on_decide,
}


# ------------------------------------------------------------------ trial workers


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
    trial = daemon.trials.get(hello.trial_id)
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


async def _serve_reports(conn: Conn, trial: Any, token: str, batcher: ReportBatcher) -> None:
    daemon = conn.daemon
    exp = trial.experiment
    while True:
        req = await batcher.next_request()
        if req is None or trial.token != token:
            return
        if isinstance(req, p.Report):
            # A report the trial waits on is held for its client's decision while the
            # experiment has a client deciding (``tuned.decisions``).
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
