"""Beside Red Hat's ``tuned`` (/usr/sbin/tuned, tuned.service, /run/tuned): never confused.

``tuned stop`` talks only to a socket that answers our handshake as the process the
kernel says serves it; it signals nothing. The client never starts a ``tuned`` from PATH
that is not ours, and the systemd unit cannot be mistaken for Red Hat's.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, socket_path
from tuned_client import protocol as p
from tuned_client.connection import daemon_command
from tuned_client.framing import encode_frame

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


@pytest.fixture
def fake_server() -> Iterator[Callable[[bytes], Path]]:
    """A Unix socket whose server answers any connection with ``reply`` and closes it."""
    servers: list[socket.socket] = []
    folder = socket_path("fake").parent

    def start(reply: bytes) -> Path:
        path = folder / f"s{len(servers)}.sock"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(path))
        srv.listen(4)
        servers.append(srv)

        def serve() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(4096)
                    conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return path

    yield start
    for srv in servers:
        srv.close()
    for sock in folder.iterdir():
        sock.unlink()
    folder.rmdir()


def stop(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "tuned", "stop", "--socket", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_stop_leaves_a_daemon_that_does_not_speak_our_protocol_alone(
    fake_server: Callable[[bytes], Path],
) -> None:
    # Red Hat's tuned, with its Unix socket API enabled, answers JSON-RPC.
    path = fake_server(b'{"jsonrpc": "2.0", "error": {"code": -32600}, "id": null}\n')
    out = stop(path)
    assert out.returncode == 1
    assert "is not a tuned trial-scheduler daemon" in out.stderr
    assert "nothing was stopped" in out.stderr


def test_stop_refuses_a_welcome_from_another_process(fake_server: Callable[[bytes], Path]) -> None:
    """A server claiming another pid's name (say, the init process) gets no Shutdown."""
    welcome = p.Welcome(protocol=p.PROTOCOL_VERSION, daemon_version="0.1.0", pid=1)
    out = stop(fake_server(encode_frame(welcome)))
    assert out.returncode == 1
    assert f"answered as pid 1 but is served by pid {os.getpid()}" in out.stderr


def test_stop_stops_our_daemon(daemon: RunningDaemon) -> None:
    proc = subprocess.Popen([PY, "-m", "tuned", "stop", "--socket", str(daemon.socket)])
    assert daemon.proc.wait(timeout=30) == 0  # reaped here: `stop` waits for the pid to go
    assert proc.wait(timeout=30) == 0


def test_stop_with_no_socket_or_a_plain_file(tmp_path: Path) -> None:
    out = stop(tmp_path / "none.sock")
    assert out.returncode == 1 and "no daemon is running on" in out.stderr
    plain = tmp_path / "file"
    plain.write_text("")
    out = stop(plain)
    assert out.returncode == 1 and "is not a socket" in out.stderr


def test_the_client_never_starts_a_tuned_from_path_that_is_not_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Fedora, ``tuned`` on PATH may be /usr/sbin/tuned: Red Hat's tuning daemon."""
    redhat = tmp_path / "bin" / "tuned"
    redhat.parent.mkdir()
    redhat.write_text("#!/usr/bin/python3 -Es\nimport tuned.daemon\n")
    redhat.chmod(redhat.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(redhat.parent))
    monkeypatch.delenv("TUNED_DAEMON", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no `tuned` beside it
    assert daemon_command() == [str(tmp_path / "python"), "-m", "tuned"]
    ours = tmp_path / "bin" / "tuned"
    ours.write_text("#!/venv/bin/python\nimport sys\nfrom tuned.cli.main import main\n")
    assert daemon_command() == [str(ours)]


def test_the_systemd_unit_cannot_be_taken_for_red_hats() -> None:
    units = sorted(p.name for p in (REPO / "contrib").glob("*.service"))
    assert units == ["tuned-trials.service"]
    unit = (REPO / "contrib" / "tuned-trials.service").read_text()
    [exec_start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert exec_start.startswith("ExecStart=%h/.local/bin/tuned start ")  # a full path
    assert "Alias=" not in unit and "/run/tuned" not in exec_start
