"""The socket side: handshake, then each request to its handler, or a trial's reports.

Each connection is a task. A frame that is too large, undecodable or of the
wrong type gets an ``Error`` naming what was wrong, then the connection is
closed; nothing else in the daemon is affected.
"""

from __future__ import annotations

import math
import os
import socket

import anyio
import msgspec
import structlog
from anyio.abc import SocketAttribute, SocketStream
from tuned_client import protocol as p

from .. import __version__
from ..errors import Refused
from . import access
from .handlers import HANDLERS
from .host import Conn, Host
from .wire import FrameError
from .workers import serve_spare, serve_worker

log = structlog.get_logger("tuned.serve.server")


def peer_uid(stream: SocketStream) -> int | None:
    peer = access.peer_creds(stream.extra(SocketAttribute.raw_socket))
    return None if peer is None else peer.uid


async def handle_connection(daemon: Host, stream: SocketStream) -> None:
    conn = Conn(stream, daemon)
    settings = daemon.settings
    peer = access.peer_creds(stream.extra(SocketAttribute.raw_socket))
    gate = daemon.gate
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
    gate = daemon.gate
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
                if not isinstance(request, p.GetStatus):
                    await daemon.recovered.wait()  # status answers while the journal replays
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
        # The experiments this connection drove: their script may be gone, or coming back.
        for experiment_id in daemon.decisions.decider_gone(conn):
            daemon.driver_left(experiment_id)


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
