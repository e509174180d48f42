"""Fixtures that start real daemons, as subprocesses, on real Unix sockets.

``daemon`` starts one with ``--num-cpus 4 --num-gpus 1`` (override with the
``daemon_args`` marker) and points this process at it through the same
environment variables a user would set (``TUNED_SOCKET``, ...).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tuned_client.connection import Connection

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[bytes]
    socket: Path
    state_dir: Path
    storage: Path
    args: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TUNED_SOCKET=str(self.socket),
            TUNED_STATE_DIR=str(self.state_dir),
            TUNED_STORAGE_PATH=str(self.storage),
        )
        return env

    def connect(self) -> Connection:
        return Connection.open(self.socket, autostart=False)

    @property
    def log(self) -> str:
        path = self.state_dir / "daemon.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def use_daemon(d: RunningDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process's clients at ``d`` the way a user would: TUNED_* variables."""
    for key, value in d.env().items():
        if key.startswith("TUNED_"):
            monkeypatch.setenv(key, value)


def start_daemon(
    base: Path,
    args: list[str],
    name: str = "d",
    *,
    foreground: bool = True,
    preexec: Callable[[], None] | None = None,
) -> RunningDaemon:
    """Start ``tuned start`` and return once its socket accepts.

    ``foreground`` logs to the console (captured in ``daemon.stderr``) instead of
    the daemon's log file; ``preexec`` runs in the child before exec (a rlimit).
    """
    sock = Path(f"/tmp/tuned-test-{os.getpid()}-{abs(hash(base)) % 10**8}-{name}") / "tuned.sock"
    state = base / f"{name}-state"
    state.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    cmd = [
        sys.executable, "-m", "tuned", "start", *(["--foreground"] if foreground else []),
        "--socket", str(sock), "--state-dir", str(state),
        "--ready-fd", str(write_fd), "--log-level", "debug", *args,
    ]  # fmt: skip
    with open(state / "daemon.stderr", "ab") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            pass_fds=(write_fd,),
            preexec_fn=preexec,  # sets a limit only, before exec
        )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        ok = ready.read(1) == b"1"
    daemon = RunningDaemon(proc, sock, state, base / "results", args)
    if not ok:
        proc.wait(timeout=10)
        raise RuntimeError(f"daemon did not start:\n{daemon.log}")
    return daemon


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[object]:
    started: list[RunningDaemon] = []

    def factory(*args: str, name: str = "d") -> RunningDaemon:
        d = start_daemon(tmp_path, list(args), name=f"{name}{len(started)}")
        started.append(d)
        return d

    yield factory
    for d in started:
        if d.proc.poll() is None:
            d.stop()
        shutil.rmtree(d.socket.parent, ignore_errors=True)


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest, daemon_factory: object, monkeypatch: pytest.MonkeyPatch
) -> RunningDaemon:
    marker = request.node.get_closest_marker("daemon_args")
    args = list(marker.args) if marker else ["--num-cpus", "4", "--num-gpus", "1"]
    d: RunningDaemon = daemon_factory(*args)  # type: ignore[operator]
    use_daemon(d, monkeypatch)
    return d


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One 2-CPU daemon for a whole module, as Ray's ``ray_start_2_cpus`` (the ported
    ``test_ray_*`` modules): each test starting its own would cost a second or more."""
    base = tmp_path_factory.mktemp("module-daemon")
    d = start_daemon(base, ["--num-cpus", "2", "--num-gpus", "0"], name="m")
    try:
        with pytest.MonkeyPatch.context() as mp:
            use_daemon(d, mp)
            yield d
    finally:
        if d.proc.poll() is None:
            d.stop()
        shutil.rmtree(d.socket.parent, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "daemon_args(*args): arguments of the `daemon` fixture")


def need_other_uids() -> None:
    """Skip, saying why, where this process cannot act as another user."""
    if os.getuid() != 0:
        pytest.skip("switching to another uid needs root (setpriv); this suite runs unprivileged")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")


# Asks a daemon for its status as whoever runs it; prints how that went.
PROBE = """
from tuned_client.connection import Connection, DaemonError
from tuned_client import protocol as p
try:
    with Connection.open({sock!r}, autostart=False) as c:
        c.request(p.GetStatus())
    print("served")
except DaemonError as e:
    print("refused:", e.message)
except OSError as e:
    print("unreachable:", type(e).__name__)
"""


def as_other_user(sock: Path, uid: int = 65534, gid: int = 65534) -> str:
    """What ``PROBE`` says as ``uid``, trusting our daemon as a shared one (TUNED_DAEMON_UID).

    Their client trusts our uid, so only the daemon's own access check decides.
    """
    need_other_uids()
    out = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         sys.executable, "-c", PROBE.format(sock=str(sock))],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "TUNED_DAEMON_UID": str(os.getuid())},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def restart_daemon(d: RunningDaemon) -> RunningDaemon:
    """Start a new daemon on ``d``'s socket and state dir (after ``d`` was killed)."""
    base = d.state_dir.parent
    name = d.state_dir.name.removesuffix("-state")
    return start_daemon(base, d.args, name=name)


def ledger_in_use(d: RunningDaemon) -> dict[str, float]:
    """The resources the daemon has handed out right now (all zero when idle)."""
    from tuned_client.protocol import GetStatus, StatusReply

    with d.connect() as conn:
        reply = conn.request(GetStatus())
    assert isinstance(reply, StatusReply)
    return {r.name: r.used for r in reply.resources}
