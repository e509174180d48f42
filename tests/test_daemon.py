"""The daemon as a service: graceful stop, output capture, bad frames, the CLI's start/stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil
import pytest
from conftest import RunningDaemon, next_event, socket_path, start_script, use_daemon
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.framing import HEADER, encode_frame, read_frame

HANGING_CLIENT = """
import subprocess
from tuned_client import tune

def hang(config):
    print("started", flush=True)
    subprocess.Popen(["sleep", "1000"])  # a child in the trial's process group
    subprocess.run(["sleep", "1000"])

tune.Tuner(hang, run_config=tune.RunConfig(verbose=0)).fit()
"""


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (a zombie awaiting its reaper does not)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def test_sigterm_stops_the_daemon_and_takes_running_trials_with_it(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    watcher = daemon.connect()
    watcher.send(p.Subscribe())
    client = start_script(daemon, tmp_path / "client.py", HANGING_CLIENT, stderr=subprocess.DEVNULL)
    try:
        started = next_event(watcher, p.TrialStarted)
        assert isinstance(started, p.TrialStarted)
        assert group_alive(started.pid)
        assert daemon.stop(signal.SIGTERM) == 0
        assert not group_alive(started.pid)  # the trial and its child are gone, reaped
        assert not (daemon.state_dir / "tuned.pid").exists()
        assert not daemon.socket.exists()
    finally:
        client.kill()
        client.wait()
        watcher.close()


def chatty(config: dict) -> dict:
    print(f"hello from trial {config['i']}")
    print("to stderr", file=sys.stderr)
    return {"i": config["i"]}


def test_a_trials_stdout_and_stderr_are_captured_in_its_folder(daemon: RunningDaemon) -> None:
    results = tune.Tuner(chatty, param_space={"i": 3}, run_config=tune.RunConfig(verbose=0)).fit()
    folder = Path(results[0].path)
    assert (folder / "stdout").read_text() == "hello from trial 3\n"
    assert (folder / "stderr").read_text() == "to stderr\n"


def raw_exchange(daemon: RunningDaemon, payload: bytes) -> p.Message:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(payload)
        reply = msgspec.msgpack.decode(read_frame(sock), type=p.Message)
        assert sock.recv(1) == b""  # then the daemon closes the connection
        return reply


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (HEADER.pack(3) + b"\xc1\xc1\xc1", "undecodable"),
        (encode_frame({"op": "hello", "protocol": "one"}), "protocol"),
        (encode_frame({"op": "launch_missiles"}), "launch_missiles"),
        (HEADER.pack(2**31), "exceeds"),
        (encode_frame(p.Hello(protocol=99)), "protocol 99"),
    ],
)
def test_bad_frames_get_an_error_naming_the_problem_and_the_daemon_serves_on(
    daemon: RunningDaemon, payload: bytes, message: str
) -> None:
    reply = raw_exchange(daemon, payload)
    assert isinstance(reply, p.Error) and message in reply.message
    with daemon.connect() as conn:
        assert isinstance(conn.request(p.GetStatus()), p.StatusReply)


def test_tuned_start_in_the_background_then_stop(tmp_path: Path) -> None:
    sock = socket_path("cli")
    state = tmp_path / "state"
    base = [sys.executable, "-m", "tuned"]
    where = ["--socket", str(sock), "--state-dir", str(state)]
    start = subprocess.run([*base, "start", *where, "--num-cpus", "3"], capture_output=True)
    assert start.returncode == 0, start.stderr
    try:
        pid = int((state / "tuned.pid").read_text())
        again = subprocess.run([*base, "start", *where], capture_output=True, text=True)
        assert again.returncode == 1 and "already running" in again.stderr
        status = subprocess.run(
            [*base, "status", "--json", "--socket", str(sock)], capture_output=True
        )
        reply = msgspec.json.decode(status.stdout)
        assert reply["pid"] == pid
        assert {"name": "cpu", "used": 0.0, "total": 3.0} in reply["resources"]
    finally:
        stop = subprocess.run([*base, "stop", "--socket", str(sock)], capture_output=True)
    assert stop.returncode == 0, stop.stderr
    assert not (state / "tuned.pid").exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def outlasts_the_idle_timeout(config: dict) -> dict:
    """Runs until a connection it opens is closed for idling: as long as the idle timeout."""
    from tuned_client.connection import Connection
    from tuned_client.framing import recv_message

    with Connection.open(config["socket"], autostart=False) as idle:
        assert isinstance(recv_message(idle.sock), p.Error)
    return {"ok": 1}


@pytest.mark.timeout(120)  # a daemon that never leaves fails here
def test_an_idle_daemon_exits_by_itself_but_not_while_it_has_work(
    daemon_factory: Callable[..., RunningDaemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = daemon_factory(
        "--num-cpus", "2", "--idle-timeout", "0.5", "--idle-connection-timeout", "0.5"
    )  # fmt: skip
    use_daemon(d, monkeypatch)
    # A trial longer than the idle timeout: the daemon must stay for it.
    results = tune.Tuner(
        outlasts_the_idle_timeout,
        param_space={"socket": str(d.socket)},
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    assert results.num_terminated == 1
    assert d.proc.wait(timeout=30) == 0  # then, idle, it leaves on its own
    assert not d.socket.exists()


def test_a_second_daemon_on_the_same_state_folder_is_refused(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """Another socket, the same state folder: it would share the journal and kill our trials."""
    results = tune.Tuner(
        chatty, param_space={"i": 1}, run_config=tune.RunConfig(name="first", verbose=0)
    ).fit()
    assert not results.errors
    archived = sorted((daemon.state_dir / "archive").iterdir())
    other_socket = socket_path("other")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "tuned", "start", "--foreground", "--num-cpus", "1",
             "--socket", str(other_socket), "--state-dir", str(daemon.state_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(other_socket.parent, ignore_errors=True)
    assert out.returncode == 1
    assert f"another tuned daemon (pid {daemon.proc.pid}) uses the state folder" in out.stderr
    assert sorted((daemon.state_dir / "archive").iterdir()) == archived  # nothing emptied
    again = tune.Tuner(
        chatty, param_space={"i": 2}, run_config=tune.RunConfig(name="second", verbose=0)
    ).fit()
    assert not again.errors
