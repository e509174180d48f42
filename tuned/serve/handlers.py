"""One handler per client request: each takes the connection, the request, a task group.

Replies that change state wait for the journal's sync first (``journal.sync``):
a client that saw a reply never loses what it said was done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup
from tuned_client import protocol as p

from ..errors import Refused
from ..store.journal import Journal
from . import views
from .decisions import Held
from .events import Subscriber
from .host import Conn


async def on_submit(conn: Conn, req: p.Submit, tg: TaskGroup) -> None:
    accepted = conn.daemon.submit(req.experiment)
    if req.experiment.decide_results or req.experiment.open_ended:  # the script drives it
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
    views.sample_usage(conn.daemon)
    await conn.send(views.status(conn.daemon))


async def on_get_experiment(conn: Conn, req: p.GetExperiment, tg: TaskGroup) -> None:
    # Encoded around the trials as their archive holds them: no object per trial.
    frame = views.experiment_frame(conn.daemon, req.experiment_id, req.start, req.page_bytes)
    await conn.send_frame(frame)


async def on_get_trial(conn: Conn, req: p.GetTrial, tg: TaskGroup) -> None:
    await conn.send(views.trial_reply(conn.daemon, req.trial_id))


async def on_stop_trial(conn: Conn, req: p.StopTrial, tg: TaskGroup) -> None:
    conn.daemon.stop_trial(req.trial_id)
    held = conn.daemon.decisions.take(req.trial_id)
    if held is not None:
        await release(conn.daemon, held, stop=True)
    await conn.send(p.Ok())


async def on_decide(conn: Conn, req: p.Decide, tg: TaskGroup) -> None:
    """The client decided on a result its trial waits on; no reply (see ``decisions``)."""
    daemon = conn.daemon
    if req.stop:
        with contextlib.suppress(Refused):  # it has ended meanwhile
            daemon.stop_trial(req.trial_id)
    held = daemon.decisions.take(req.trial_id, req.seq)
    if held is not None:
        trial = daemon.trial(req.trial_id)
        await release(daemon, held, stop=req.stop or (trial is not None and trial.stop_requested))


class Journalled(Protocol):
    journal: Journal


async def release(daemon: Journalled, held: Held, *, stop: bool) -> None:
    """Let a trial waiting on a decision go on (or stop), its checkpoint on disk first."""
    if held.checkpoint:
        await daemon.journal.sync()
    worker: Conn = held.worker
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await worker.send(p.ReportAck(seq=held.report_seq, stop=stop))


async def on_restart_trial(conn: Conn, req: p.RestartTrial, tg: TaskGroup) -> None:
    conn.daemon.restart_trial(req.trial_id, req.config, req.checkpoint, req.resources)
    await conn.daemon.journal.sync()
    await conn.send(p.Ok())


async def on_resume(conn: Conn, req: p.ResumeExperiment, tg: TaskGroup) -> None:
    accepted = conn.daemon.resume(req)
    if conn.daemon.experiment(req.experiment_id).needs_driver:  # the restoring script drives it
        conn.daemon.decisions.add_decider(req.experiment_id, conn)
    await conn.daemon.journal.sync()
    await conn.send(accepted)


async def on_shutdown(conn: Conn, req: p.Shutdown, tg: TaskGroup) -> None:
    await conn.send(p.Ok())
    conn.daemon.request_shutdown()


async def on_subscribe(conn: Conn, req: p.Subscribe, tg: TaskGroup) -> None:
    daemon = conn.daemon
    if req.experiment_id:
        daemon.experiment(req.experiment_id)  # refuse unknown ids
        if req.decide:  # its script (back after a reconnect) drives it
            daemon.decisions.add_decider(req.experiment_id, conn)
            for held in daemon.decisions.seen(req.experiment_id, req.since):
                await release(daemon, held, stop=False)
    sub = daemon.bus.subscribe(req.experiment_id, req.since)
    tg.start_soon(stream_events, conn, sub, req.since)


async def stream_events(conn: Conn, sub: Subscriber, since: int) -> None:
    """Send the history after ``since`` (if asked), then live events, until the client goes.

    A subscriber behind (from its subscription, or after its buffer overflowed)
    reads the history a piece at a time from the last event it sent; one that
    the history no longer covers is told ``Lagged`` and the subscription ends.
    A live one sends whatever is buffered when it wakes as one write: one
    syscall and one wake-up of the reader for a burst of events. The bus paces
    the deliveries (``events.DELIVERY_S``), so a busy stream wakes this task at
    most once per interval and every subscriber writes in the same turn.
    """
    bus = conn.daemon.bus
    last = since if since >= 0 else bus.seq
    try:
        while True:
            if sub.lagging:
                piece = bus.history_piece(last, sub.experiment_id)
                if piece is None:
                    await conn.send(p.Lagged(last_seq=last))
                    return
                if piece:
                    last = await _send_batch(conn, sub, piece, last)
                    continue
                sub.lagging = False  # read to the end: live from here
                sub.take()  # anything buffered meanwhile was in the history too
            elif sub.queue:
                last = await _send_batch(conn, sub, sub.take(), last)
            else:
                await sub.wait()
    finally:
        bus.unsubscribe(sub)


_MAX_BATCH_BYTES = 1 << 20  # a large batch goes out in pieces, so replies interleave


async def _send_batch(
    conn: Conn, sub: Subscriber, frames: list[tuple[int, bytes]], last: int
) -> int:
    """Send the frames after ``last`` in as few writes as fit; return the last seq sent.

    Only the write under way is held (``sub.sending``): the frames are shared
    with the history, so a subscriber blocked on a write costs that piece, not
    a copy of everything it has yet to send. The journal is written first: no
    event leaves the daemon before its record (a results record may be held
    for the turn, ``Daemon.emit``).
    """
    conn.daemon.journal.flush()
    chunk: list[bytes] = []
    size = 0
    for seq, frame in frames:
        if seq <= last:
            continue  # sent already (read from the history, then buffered again)
        chunk.append(frame)
        size += len(frame)
        last = seq
        if size >= _MAX_BATCH_BYTES:
            await _write(conn, sub, chunk, size)
            chunk, size = [], 0
    if chunk:
        await _write(conn, sub, chunk, size)
    return last


async def _write(conn: Conn, sub: Subscriber, chunk: list[bytes], size: int) -> None:
    sub.sending = size
    try:
        await conn.send_frame(chunk[0] if len(chunk) == 1 else b"".join(chunk))
    finally:
        sub.sending = 0


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
