"""The client's connection to the daemon: opening it, and getting it back after a loss.

``fit()`` survives a daemon restart: it reconnects (starting the daemon again
if it had started it) and resubscribes from the last event it saw.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import protocol as p
from ..connection import Connection, DaemonUnavailable, TunedError
from ..framing import FrameError
from ..paths import default_socket_path
from .result import TuneError

# How long fit() waits for a daemon that went away to come back: one that crashed
# (its socket file is still there) may be restarted by whoever runs it; one that
# was stopped on purpose (it removed its socket) only by a service restart.
RECONNECT_TIMEOUT_S = float(os.environ.get("TUNED_RECONNECT_TIMEOUT", "120"))
STOPPED_WAIT_S = 10.0


def daemon_stopped(socket_path: str | None, grace_s: float = 1.0) -> bool:
    """Whether the daemon that just went away was stopped on purpose.

    A daemon that stops removes its socket right after closing its
    connections; one that crashed leaves it. So: gone within ``grace_s``.
    """
    path = Path(socket_path) if socket_path else default_socket_path()
    deadline = time.monotonic() + grace_s
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # a file's removal wakes nothing we could wait on
    return True


def open_connection(socket_path: str | None) -> tuple[Connection, bool]:
    """Connect, starting a daemon if none listens; says whether we started it."""
    try:
        return Connection.open(socket_path, autostart=False), False
    except DaemonUnavailable:
        return Connection.open(socket_path, autostart=True), True


def reconnect(
    socket_path: str | None,
    autostart: bool,
    subscribe: p.Subscribe | None,
    experiment_path: str,
    timeout_s: float = RECONNECT_TIMEOUT_S,
) -> Connection:
    """A new connection after the daemon went away, sending ``subscribe`` on it (if any)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        try:
            conn = Connection.open(socket_path, autostart=autostart)
            break
        except (TunedError, FrameError, OSError) as exc:
            if time.monotonic() > deadline:
                raise TuneError(
                    f"lost the tuned daemon and it did not come back ({exc}); the experiment "
                    f"goes on when it restarts: Tuner.restore({experiment_path!r}, ...)"
                ) from exc
            time.sleep(delay)  # waiting for another process to listen: nothing to await
            delay = min(delay * 2, 0.5)
    if subscribe is not None:
        conn.send(subscribe)
    return conn
