"""``tuned web``: serve the page on 127.0.0.1 with a fresh token, until Ctrl-C.

uvicorn serves the starlette app on a socket we bind ourselves (so ``--port
0`` picks a free port and the printed URL names it), in the same event loop
as the daemon feed and the pusher. When the daemon stops, so does the page.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
from pathlib import Path

import anyio
import uvicorn
from tuned_client.connection import Connection, DaemonError, DaemonUnavailable
from tuned_client.paths import default_socket_path

from .app import Hub, build_app
from .feed import DaemonGone, Feed
from .model import WebModel

HOST = "127.0.0.1"


def cmd_web(args: argparse.Namespace) -> int:
    socket_path = (args.socket or default_socket_path()).absolute()
    try:
        Connection.open(socket_path, autostart=False, client="tuned-web").close()
    except (DaemonUnavailable, DaemonError) as exc:
        print(f"tuned: {exc} (start it with `tuned start`)", file=sys.stderr)
        return 1
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((HOST, args.port))
        listener.listen(128)  # the printed URL connects at once; uvicorn accepts when up
    except OSError as exc:
        print(f"tuned: cannot listen on {HOST}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    port = listener.getsockname()[1]
    token = secrets.token_urlsafe(32)
    try:
        return anyio.run(
            _serve, socket_path, listener, port, token, backend_options={"use_uvloop": True}
        )
    except KeyboardInterrupt:
        return 0


async def _serve(socket_path: Path, listener: socket.socket, port: int, token: str) -> int:
    model = WebModel()
    hub = Hub(model)
    feed = Feed(socket_path, model, hub.changed)
    app = build_app(model, feed, hub, socket_path, token, port)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        ws_per_message_deflate=False,  # loopback: compressing costs CPU per page, saves nothing
    )
    server = uvicorn.Server(config)
    status = 0

    async def follow() -> None:
        nonlocal status
        try:
            await feed.run()
        except DaemonGone:
            print(f"tuned web: the daemon on {socket_path} stopped", file=sys.stderr)
            status = 1
        server.should_exit = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        tg.start_soon(hub.push_forever)
        print(f"tuned web: every experiment of the daemon on {socket_path}, at", flush=True)
        print(f"    http://{HOST}:{port}/?token={token}", flush=True)
        print("Open it in a browser on this machine (Ctrl-C to stop).", flush=True)
        await server.serve(sockets=[listener])
        tg.cancel_scope.cancel()
    return status
