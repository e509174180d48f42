"""The page's routes (starlette): the page, its live stream, a trial's logs, cancel.

Pages get a WebSocket (``/api/live``; ``/api/stream`` serves the same as
server-sent events to other clients): a snapshot of their view (the overview, or one
experiment with every trial's curve), then deltas. The pusher wakes when the
feed folds an event, waits ``PUSH_INTERVAL_S`` so a burst of results goes out
as one message, encodes each view's delta once, and hands it to every page
showing that view. A page too slow for its queue is dropped; its browser
reconnects and starts again from a snapshot.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect
from tuned_client import protocol as p
from tuned_client.connection import DaemonError

from .feed import Feed, daemon_request
from .guard import WS_PROTOCOL, Guard
from .model import WebModel

PUSH_INTERVAL_S = 0.5
KEEPALIVE_S = 15.0
QUEUE = 64  # messages a page may fall behind before it is dropped
LOG_TAIL = 256 * 1024  # the end of a trial's stdout/stderr the page shows
TRIAL_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STATIC = files("tuned.web") / "static"
_json = msgspec.json.Encoder()


class Hub:
    """The pages that are open, by view ("" is the overview), and the pusher."""

    def __init__(self, model: WebModel) -> None:
        self.model = model
        self.pages: dict[MemoryObjectSendStream[bytes], str] = {}
        self.wake = anyio.Event()

    def changed(self) -> None:
        self.wake.set()

    async def push_forever(self) -> None:
        while True:
            await self.wake.wait()
            await anyio.sleep(PUSH_INTERVAL_S)  # gather a burst into one message
            self.wake = anyio.Event()
            views = set(self.pages.values())
            deltas = self.model.take_deltas(views - {""})
            encoded = {view: _json.encode(msg) for view, msg in deltas.items()}
            for page, view in list(self.pages.items()):
                for part in (encoded[""], encoded.get(view)) if view else (encoded[""],):
                    if part is None:
                        continue
                    try:
                        page.send_nowait(part)
                    except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                        self.pages.pop(page, None)
                        page.close()
                        break

    async def stream(self, view: str, feed: Feed) -> AsyncIterator[bytes]:
        await feed.ready.wait()
        if view:
            await feed.load_curves(view)
        send, receive = anyio.create_memory_object_stream[bytes](QUEUE)
        snapshot = self.model.experiment(view) if view else None
        self.pages[send] = view
        try:
            yield _json.encode(self.model.overview())
            if view:
                yield _json.encode(snapshot or {"kind": "missing", "id": view})
            async with receive:
                while True:
                    part = b""  # a keepalive: lets a dead connection be noticed
                    with anyio.move_on_after(KEEPALIVE_S):
                        part = await receive.receive()
                    yield part
        except anyio.EndOfStream:
            return
        finally:
            self.pages.pop(send, None)
            send.close()


async def _sse(parts: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for part in parts:
        yield b"data: " + part + b"\n\n" if part else b": keepalive\n\n"


async def _live(ws: WebSocket) -> None:
    """The page's stream: a WebSocket, because browsers give server-sent events six
    HTTP/1.1 connections per host across all tabs, and a seventh tab would hang."""
    view = ws.query_params.get("view", "")
    if view and not TRIAL_ID.fullmatch(view):
        await ws.close(code=1008)
        return
    offered = ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol=WS_PROTOCOL if WS_PROTOCOL in offered else None)
    hub: Hub = ws.app.state.hub
    parts = hub.stream(view, ws.app.state.feed)

    async def drain() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await ws.receive_text()  # nothing is expected; notices the close

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain)
        try:
            async for part in parts:
                if part:
                    await ws.send_text(part.decode())
        except (WebSocketDisconnect, OSError):
            pass
        finally:
            tg.cancel_scope.cancel()


def _page(request: Request) -> Response:
    """The shell: no secret in it (its script takes the token from the printed URL)."""
    return HTMLResponse((STATIC / "index.html").read_text())


def _auth(request: Request) -> Response:
    """200 to a request with the token (the ``Guard`` refused any other): the page's check."""
    return JSONResponse({"ok": True})


async def _stream(request: Request) -> Response:
    view = request.query_params.get("view", "")
    if view and not TRIAL_ID.fullmatch(view):
        return PlainTextResponse("bad view", status_code=400)
    hub: Hub = request.app.state.hub
    return StreamingResponse(
        _sse(hub.stream(view, request.app.state.feed)),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


async def _trial(request: Request) -> Response:
    trial_id = request.path_params["trial_id"]
    model: WebModel = request.app.state.model
    if not TRIAL_ID.fullmatch(trial_id) or (info := model.trial(trial_id)) is None:
        return JSONResponse({"error": f"no trial {trial_id!r}"}, status_code=404)
    return JSONResponse(info)


async def _log(request: Request) -> Response:
    """The end of a trial's stdout or stderr: the file in the folder the daemon names.

    Only the trial id comes from the page, and only ``stdout``/``stderr`` as the
    file: the folder is the daemon's answer, so no path the page sends is opened;
    a link planted in the folder is not followed.
    """
    trial_id = request.path_params["trial_id"]
    which = request.path_params["which"]
    if which not in ("stdout", "stderr") or not TRIAL_ID.fullmatch(trial_id):
        return PlainTextResponse("no such log", status_code=404)
    socket_path: Path = request.app.state.socket_path
    try:
        reply = await anyio.to_thread.run_sync(request_trial, socket_path, trial_id)
    except DaemonError as exc:
        return PlainTextResponse(exc.message, status_code=404)
    if not reply.path:
        return PlainTextResponse("", headers={"X-Tuned-Note": "not started yet"})
    text = await anyio.to_thread.run_sync(read_tail, Path(reply.path) / which)
    return PlainTextResponse(text)


def request_trial(socket_path: Path, trial_id: str) -> p.TrialReply:
    reply = daemon_request(socket_path, p.GetTrial(trial_id=trial_id))
    assert isinstance(reply, p.TrialReply)
    return reply


def read_tail(path: Path, limit: int = LOG_TAIL) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        f.seek(max(size - limit, 0))
        data = f.read(limit)
    cut = f"[... the first {size - limit:,} bytes are not shown]\n" if size > limit else ""
    return cut + data.decode("utf-8", "replace")


async def _cancel(request: Request) -> Response:
    """``tuned cancel TARGET``: the same request, so the daemon's same checks."""
    if request.headers.get("content-type", "").split(";")[0] != "application/json":
        return JSONResponse({"error": "expected JSON"}, status_code=415)
    try:
        body = msgspec.json.decode(await request.body(), type=dict[str, str])
        target = body["target"]
    except (msgspec.DecodeError, KeyError):
        return JSONResponse({"error": 'expected {"target": ID}'}, status_code=400)
    if not TRIAL_ID.fullmatch(target):
        return JSONResponse({"error": f"no experiment or trial {target!r}"}, status_code=404)
    socket_path: Path = request.app.state.socket_path
    try:
        await anyio.to_thread.run_sync(daemon_request, socket_path, p.Cancel(target=target))
    except DaemonError as exc:
        status = 404 if exc.code == "not_found" else 409
        return JSONResponse({"error": exc.message}, status_code=status)
    return JSONResponse({"cancelled": target})


def build_app(
    model: WebModel, feed: Feed, hub: Hub, socket_path: Path, token: str, port: int
) -> Starlette:
    """The routes behind the ``Guard``: nothing is reached without its checks."""
    app = Starlette(
        middleware=[Middleware(Guard, token=token, port=port)],
        routes=[
            Route("/", _page),
            Route("/api/auth", _auth),
            Route("/api/stream", _stream),
            WebSocketRoute("/api/live", _live),
            Route("/api/trial/{trial_id}", _trial),
            Route("/api/trial/{trial_id}/{which}", _log),
            Route("/api/cancel", _cancel, methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
    )
    app.state.model, app.state.feed, app.state.hub = model, feed, hub
    app.state.socket_path, app.state.token = socket_path, token
    return app
