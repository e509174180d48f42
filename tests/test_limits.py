"""Limits on connections, and who besides the daemon's own user may connect.

A script that leaks connections in a loop must get a clear refusal naming the
limit, not use up the daemon's file descriptors for everyone else; a quiet
connection nobody uses is closed, but never one that follows an experiment or
belongs to a running trial. On a shared workstation, named uids and groups may
be let in; everyone else is still refused.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RunningDaemon, as_other_user, probe
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection, DaemonError
from tuned_client.framing import ConnectionClosed, recv_message


def hang_up(conn: Connection) -> None:
    """Close, and wait until the daemon has closed its end too (it counts us out first)."""
    conn.sock.shutdown(socket.SHUT_WR)
    with pytest.raises((ConnectionClosed, OSError)):
        recv_message(conn.sock)
    conn.close()


def status_ok(conn: Connection) -> bool:
    return isinstance(conn.request(p.GetStatus()), p.StatusReply)


@pytest.mark.daemon_args("--num-cpus", "1", "--max-connections-per-client", "4")
def test_one_client_holding_too_many_connections_is_refused_by_name(
    daemon: RunningDaemon,
) -> None:
    held = [daemon.connect() for _ in range(4)]
    with pytest.raises(DaemonError) as refused:
        daemon.connect()
    assert refused.value.code == "refused"
    assert f"too many connections from process {os.getpid()}" in refused.value.message
    assert "max_connections_per_peer) is 4" in refused.value.message
    assert probe(daemon.socket) == "served"  # another process is not held back by ours
    hang_up(held.pop())  # a connection given back makes room again
    with daemon.connect() as again:
        assert status_ok(again)
    assert all(status_ok(c) for c in held)
    for c in held:
        c.close()


@pytest.mark.daemon_args(
    "--num-cpus", "1", "--max-connections", "5", "--max-connections-per-client", "100"
)
def test_the_total_number_of_connections_is_capped(daemon: RunningDaemon) -> None:
    held = [daemon.connect() for _ in range(5)]
    other = probe(daemon.socket)
    assert "too many connections: the daemon holds 5" in other
    assert "(max_connections) is 5" in other
    for c in held:
        hang_up(c)
    with daemon.connect() as conn:  # closed ones are counted out
        assert status_ok(conn)


# Times from before its connection exists, so the daemon's idle clock cannot have
# started earlier: at least the limit passes, however slow the machine.
IDLE_PROBE = """
import time
from tuned_client.connection import Connection
start = time.monotonic()
with Connection.open({sock!r}, autostart=False) as c:
    msg = c.recv()
    print(round(time.monotonic() - start, 3), msg.message, flush=True)
"""
# The event loop's clock counts whole milliseconds: a deadline may fire a little early.
CLOCK_GRAIN = 0.005


@pytest.mark.timeout(120)  # a connection never closed fails here
@pytest.mark.daemon_args("--num-cpus", "1", "--idle-connection-timeout", "1")
def test_an_idle_connection_is_closed_but_subscribers_and_their_process_are_not(
    daemon: RunningDaemon,
) -> None:
    follower = daemon.connect()
    follower.send(p.Subscribe(experiment_id="", since=-1))
    control = daemon.connect()  # quiet, like fit()'s steering connection beside its stream
    # Another process's quiet connection: told why, then closed.
    idle = subprocess.run(
        [sys.executable, "-c", IDLE_PROBE.format(sock=str(daemon.socket))],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert idle.returncode == 0, idle.stderr
    waited, message = idle.stdout.split(" ", 1)
    assert float(waited) >= 1 - CLOCK_GRAIN  # not closed before the limit
    assert "connection closed after 1 s without a request (idle_connection_timeout_s)" in message
    # This process follows events, so neither of its connections was dropped meanwhile.
    assert status_ok(control)
    results = tune.Tuner(lambda c: {"x": 1}, run_config=tune.RunConfig(verbose=0)).fit()
    assert not results.errors
    while not isinstance(msg := follower.recv(), p.ExperimentFinished):
        pass
    assert msg.counts == {"TERMINATED": 1}
    follower.close()
    control.close()


@pytest.mark.timeout(60)  # a connection never closed fails here
@pytest.mark.daemon_args("--num-cpus", "1", "--idle-connection-timeout", "1")
def test_a_quiet_connection_alone_is_closed_with_the_reason(daemon: RunningDaemon) -> None:
    started = time.monotonic()  # before the connection: the daemon's clock starts later
    with daemon.connect() as conn:
        msg = recv_message(conn.sock)  # waiting for the daemon's word: it comes after ~1 s
        assert isinstance(msg, p.Error)
        assert "idle_connection_timeout_s" in msg.message
        assert time.monotonic() - started >= 1 - CLOCK_GRAIN
        with pytest.raises((ConnectionClosed, OSError)):
            recv_message(conn.sock)


def quiet_trial(config: dict) -> None:
    tune.report({"step": 1})
    # Quiet for longer than the idle limit, by no clock: until a connection opened
    # after the report is itself closed for idling.
    with Connection.open(config["socket"], autostart=False) as idle:
        assert isinstance(recv_message(idle.sock), p.Error)
    tune.report({"step": 2})


@pytest.mark.timeout(120)  # a trial whose idle probe is never closed fails here
@pytest.mark.daemon_args("--num-cpus", "1", "--idle-connection-timeout", "1")
def test_a_trial_quiet_for_longer_than_the_idle_limit_still_reports(
    daemon: RunningDaemon,
) -> None:
    results = tune.Tuner(
        quiet_trial,
        param_space={"socket": str(daemon.socket)},
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert not results.errors
    assert results[0].metrics["step"] == 2


def open_up(d: RunningDaemon) -> None:
    """Let others reach the socket, so only the daemon's own check decides."""
    os.chmod(d.socket.parent, 0o755)
    os.chmod(d.socket, 0o666)


@pytest.mark.root
@pytest.mark.parametrize(
    "flags", [["--allow-uid", "65534"], ["--allow-group", "nogroup"]], ids=["uid", "group"]
)
def test_an_allowed_uid_or_group_is_served_and_others_are_not(
    daemon_factory: object, flags: list[str]
) -> None:
    d: RunningDaemon = daemon_factory("--num-cpus", "1", *flags)  # type: ignore[operator]
    open_up(d)
    assert as_other_user(d.socket) == "served"
    plain: RunningDaemon = daemon_factory("--num-cpus", "1")  # type: ignore[operator]
    open_up(plain)
    assert "only serves its own user" in as_other_user(plain.socket)
    if flags[0] == "--allow-uid":  # a uid neither allowed nor in an allowed group
        other = as_other_user(d.socket, 65533, 65533)
        assert "only serves its own user and the uids/groups" in other


def test_an_unknown_group_is_refused_at_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tuned", "start", "--foreground", "--allow-group", "no-such-grp",
         "--socket", str(tmp_path / "never" / "tuned.sock")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0
    assert "--allow-group 'no-such-grp': no such group" in out.stderr


@pytest.mark.daemon_args("--num-cpus", "1", "--handshake-timeout", "0.5")
def test_a_connection_that_never_says_hello_is_told_why_it_is_closed(
    daemon: RunningDaemon,
) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(daemon.socket))
    reply = recv_message(silent)
    assert isinstance(reply, p.Error)
    assert reply.message == "no hello within 0.5 s; closing"
    silent.close()


@pytest.mark.daemon_args("--num-cpus", "1", "--handshake-timeout", "1.5")
def test_a_half_sent_header_gets_no_more_time_than_silence(daemon: RunningDaemon) -> None:
    """Two bytes of a frame header, then nothing: closed like a silent connection, not later.

    Both kinds are opened together, so a busy machine delays both alike; before,
    the half-sent ones got a second handshake window (closed at twice the timeout).
    """

    def closed_after(sock: socket.socket, started: float) -> float:
        reply = recv_message(sock)
        assert isinstance(reply, p.Error) and "no hello within 1.5 s" in reply.message
        return time.monotonic() - started

    started = time.monotonic()
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(10)]
    half = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(10)]
    for sock in silent + half:
        sock.connect(str(daemon.socket))
    for sock in half:
        sock.sendall(b"\x00\x00")
    silent_s = max(closed_after(s, started) for s in silent)
    half_s = max(closed_after(s, started) for s in half)
    for sock in silent + half:
        sock.close()
    assert half_s < silent_s + 0.75, (half_s, silent_s)
