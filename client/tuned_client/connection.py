"""A blocking connection to the daemon, started on demand like ``ray.init()``.

The client is synchronous on purpose: user scripts, notebooks and trial code
call it from plain threads, and must not have to share an event loop with us.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__, trust
from .errors import DaemonError, DaemonUnavailable, TunedError
from .framing import ConnectionClosed, recv_message, send_message
from .paths import default_socket_path, default_state_dir
from .protocol import (
    PROTOCOL_VERSION,
    Error,
    ExperimentReply,
    GetExperiment,
    Hello,
    Message,
    Welcome,
)

DEFAULT_IDLE_TIMEOUT_S = 600.0
PAGE_BYTES = 4 << 20  # a GetExperiment page: well under the frame cap, few round trips


def daemon_command() -> list[str]:
    """How to run the ``tuned`` command: it may live in another environment.

    A ``tuned`` found on PATH is used only if it is ours (its script runs
    ``tuned.cli.main``): on Fedora and RHEL, ``/usr/sbin/tuned`` is Red Hat's
    system tuning daemon, which must never be started in its place.
    """
    override = os.environ.get("TUNED_DAEMON")
    if override:
        return override.split()
    beside = Path(sys.executable).parent / "tuned"
    if is_our_command(beside):
        return [str(beside)]
    found = shutil.which("tuned")
    if found and is_our_command(Path(found)):
        return [found]
    return [sys.executable, "-m", "tuned"]


def is_our_command(path: Path) -> bool:
    """The console script pip or pipx wrote for our ``tuned`` (not Red Hat's)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"tuned.cli.main" in head


def start_daemon(socket_path: Path, state_dir: Path, idle_timeout: float) -> None:
    """Start a background daemon and return once its socket accepts."""
    cmd = [
        *daemon_command(),
        "start",
        "--socket",
        str(socket_path),
        "--state-dir",
        str(state_dir),
        "--idle-timeout",
        str(idle_timeout),
        "--if-needed",
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DaemonUnavailable(
            f"could not start the tuned daemon ({' '.join(cmd)}): "
            f"{(proc.stderr or proc.stdout).strip()}"
        )


def _connect_raw(path: Path) -> socket.socket:
    return trust.connect(path)


class Connection:
    """One connection: request/response, or a stream of events after Subscribe."""

    def __init__(self, sock: socket.socket, welcome: Welcome, socket_path: Path) -> None:
        self.sock = sock
        self.welcome = welcome
        self.socket_path = socket_path

    @classmethod
    def open(
        cls,
        socket_path: str | Path | None = None,
        *,
        autostart: bool = True,
        state_dir: str | Path | None = None,
        idle_timeout: float | None = None,
        client: str = "tuned_client",
    ) -> Connection:
        path = Path(socket_path) if socket_path else default_socket_path()
        try:
            sock = _connect_raw(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if not autostart:
                raise DaemonUnavailable(f"no tuned daemon is listening on {path}") from exc
            if idle_timeout is None:
                idle_timeout = float(os.environ.get("TUNED_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT_S))
            start_daemon(path, Path(state_dir) if state_dir else default_state_dir(), idle_timeout)
            sock = _connect_raw(path)
        for attempt in range(4):
            try:
                return cls.handshake(sock, path, client)
            except (ConnectionResetError, ConnectionClosed):
                # Seen under heavy load (50 clients at once): the connection dropped
                # before the daemon read our hello. Nothing was done yet: try again.
                if attempt == 3:
                    raise
                time.sleep(0.01 * (attempt + 1))
                sock = _connect_raw(path)
        raise AssertionError("unreachable")

    @classmethod
    def handshake(cls, sock: socket.socket, path: Path, client: str) -> Connection:
        # If the daemon refused us before our hello arrived, its reason waits to be read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            send_message(sock, Hello(protocol=PROTOCOL_VERSION, client=client, pid=os.getpid()))
        reply = recv_message(sock)
        if isinstance(reply, Error):
            sock.close()
            raise DaemonError(reply.code, reply.message)
        if not isinstance(reply, Welcome):
            sock.close()
            raise TunedError(f"unexpected handshake reply {type(reply).__name__}")
        return cls(sock, reply, path)

    def send(self, request: Any) -> None:
        send_message(self.sock, request)

    def recv(self) -> Message:
        return recv_message(self.sock)

    def request(self, request: Any) -> Message:
        """Send one request and return its reply; a refusal raises ``DaemonError``.

        An experiment's snapshot (``GetExperiment``) is asked for in pages and
        returned whole: it grows with trials and results past the frame cap.
        """
        if isinstance(request, GetExperiment) and not request.page_bytes:
            return self.get_experiment(request.experiment_id)
        self.send(request)
        reply = self.recv()
        if isinstance(reply, Error):
            raise DaemonError(reply.code, reply.message)
        return reply

    def get_experiment(self, experiment_id: str, page_bytes: int = PAGE_BYTES) -> ExperimentReply:
        """An experiment with all its trials, asked for a page at a time.

        An experiment's trials with their last results can be larger than one
        frame (1,500 trials reporting 3,000 metrics each: 93 MB); pages keep each
        reply well under the cap. ``seq`` is the first page's: events after it
        bring the later pages' trials up to date.
        """
        reply: ExperimentReply | None = None
        start = 0
        while True:
            page = self.request(
                GetExperiment(experiment_id=experiment_id, start=start, page_bytes=page_bytes)
            )
            if not isinstance(page, ExperimentReply):
                raise TunedError(f"unexpected reply {type(page).__name__} to GetExperiment")
            if reply is None:
                reply = page
            else:
                reply.trials.extend(page.trials)
                reply.finished = page.finished
            if page.next_start <= start:  # the last page (or a daemon that does not page)
                reply.next_start = 0
                return reply
            start = page.next_start

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "Connection",
    "DaemonError",
    "DaemonUnavailable",
    "TunedError",
    "__version__",
    "start_daemon",
]
