"""One handler per client request: each takes the connection, the request, a task group.

Replies that change state wait for the journal's sync first (``journal.sync``):
a client that saw a reply never loses what it said was done.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup
from tuned_client import protocol as p

from ..errors import Refused
from . import views
from .decisions import Held
from .events import Subscriber
from .host import Conn, Host


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


async def release(daemon: Host, held: Held, *, stop: bool) -> None:
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
