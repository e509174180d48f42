"""Real daemons for the tests, and the ways a test talks to one: requests, events, the CLI.

``start_daemon`` runs ``tuned start`` as a subprocess on a real Unix socket and
returns once the socket accepts. The sockets live in one short folder of the
session (``socket_root``); the daemon's state, results and log live in the
test's own folder. Every daemon a test starts is stopped when the test ends
(conftest's ``isolated`` fixture), so a failing test leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from tuned_client import protocol as p
from tuned_client.connection import Connection

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
R = TypeVar("R")

_sockets: Path | None = None
OWNER = ".owner"  # in a socket root: the pid of the pytest run it belongs to
started_by_test: list[RunningDaemon] = []  # conftest stops them when the test ends


def socket_root() -> Path:
    """The session's folder for Unix sockets, made on first use (conftest removes it).

    Short (a socket's path holds at most 107 bytes; a test's tmp_path can be
    longer) and passable by other users (0711: the access tests reach an opened-up
    socket as ``nobody``, who cannot enter pytest's own 0700 folders).
    """
    global _sockets
    if _sockets is None:
        _sockets = Path(tempfile.mkdtemp(prefix="tuned-test-", dir="/tmp"))
        _sockets.chmod(0o711)
        (_sockets / OWNER).write_text(str(os.getpid()))  # whose it is, for conftest's check
    return _sockets


def socket_path(name: str) -> Path:
    """A socket's path in a fresh folder of the session's socket root (nothing there yet)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=socket_root())) / "tuned.sock"


def remove_socket_root() -> None:
    global _sockets
    if _sockets is not None:
        import shutil

        shutil.rmtree(_sockets, ignore_errors=True)
        _sockets = None


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

    def ask(self, request: Any, reply: type[R]) -> R:
        """One request on a connection of its own; the answer must be a ``reply``."""
        with self.connect() as conn:
            return ask(conn, request, reply)

    def status(self) -> p.StatusReply:
        return self.ask(p.GetStatus(), p.StatusReply)

    @property
    def log(self) -> str:
        path = self.state_dir / "daemon.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def ask(conn: Connection, request: Any, reply: type[R]) -> R:
    answer = conn.request(request)
    assert isinstance(answer, reply), answer
    return answer


def next_event(conn: Connection, kind: type[R], where: Callable[[R], bool] = bool) -> R:
    """The next event of ``kind`` (for which ``where`` holds) on a subscribed connection."""
    while True:
        msg = conn.recv()
        if isinstance(msg, kind) and where(msg):
            return msg


def ledger_in_use(d: RunningDaemon) -> dict[str, float]:
    """The resources the daemon has handed out right now (all zero when idle)."""
    return {r.name: r.used for r in d.status().resources}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


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
    env: Mapping[str, str] | None = None,
    owned_by_test: bool = True,
) -> RunningDaemon:
    """Start ``tuned start`` and return once its socket accepts.

    ``foreground`` logs to the console (captured in ``daemon.stderr``) instead of
    the daemon's log file; ``preexec`` runs in the child before exec (a rlimit);
    ``env`` replaces this process's environment (for a daemon of a whole module,
    started outside any test's private one). The running test stops the daemon
    when it ends, unless ``owned_by_test`` is false (then whoever started it does).
    """
    sock = socket_root() / f"{abs(hash(str(base))) % 10**8}-{name}" / "tuned.sock"
    state = base / f"{name}-state"
    state.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    cmd = [
        PY, "-m", "tuned", "start", *(["--foreground"] if foreground else []),
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
            env=None if env is None else dict(env),
        )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        ok = ready.read(1) == b"1"
    daemon = RunningDaemon(proc, sock, state, base / "results", args)
    if owned_by_test:
        started_by_test.append(daemon)
    if not ok:
        proc.wait(timeout=10)
        raise RuntimeError(f"daemon did not start:\n{daemon.log}")
    return daemon


def restart_daemon(d: RunningDaemon) -> RunningDaemon:
    """Start a new daemon on ``d``'s socket and state dir (after ``d`` was killed)."""
    base = d.state_dir.parent
    name = d.state_dir.name.removesuffix("-state")
    again = start_daemon(base, d.args, name=name)
    wait_recovered(again)
    return again


def wait_recovered(d: RunningDaemon) -> None:
    """Return once ``d`` has replayed its journal and dealt with what the last one left.

    The socket answers status while the journal replays; every other request
    waits for the replay (and the kill of the dead daemon's leftovers) to end,
    so one such request, whatever its answer, is the wait.
    """
    from tuned_client.errors import DaemonError
    from tuned_client.protocol import GetTrial

    with d.connect() as conn, contextlib.suppress(DaemonError):
        conn.request(GetTrial(trial_id="-"))  # no such trial: the answer says the replay is over


def start_script(
    d: RunningDaemon, path: Path, source: str, *args: str, **popen: Any
) -> subprocess.Popen[Any]:
    """Write ``source`` to ``path`` and run it as a user's script against ``d`` (its client).

    ``popen`` goes to ``subprocess.Popen`` (``stdout=subprocess.PIPE, text=True``, ...).
    """
    path.write_text(source)
    return subprocess.Popen([PY, str(path), *args], env=d.env(), **popen)


def first_of_each(conn: Connection, kind: type[R], trials: int) -> dict[str, R]:
    """The first ``kind`` event of each of ``trials`` trials, on a subscribed connection."""
    seen: dict[str, R] = {}
    while len(seen) < trials:
        event = next_event(conn, kind)
        seen.setdefault(event.trial_id, event)  # type: ignore[attr-defined]
    return seen


# ----------------------------------------------------------------- the command line


def tuned(
    d: RunningDaemon, command: str, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """``tuned COMMAND --socket <d's> ARGS...`` as a user runs it (``env`` adds variables)."""
    return subprocess.run(
        [PY, "-m", "tuned", command, "--socket", str(d.socket), *args],
        env={**d.env(), **env}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def tuned_ok(d: RunningDaemon, command: str, *args: str, **env: str) -> str:
    """What ``tuned COMMAND ...`` prints; it must succeed."""
    out = tuned(d, command, *args, **env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def tuned_bg(d: RunningDaemon, command: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "tuned", command, "--socket", str(d.socket), *args],
        env=d.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


# ----------------------------------------------------------------- other users


def need_other_uids() -> None:
    """Skip, saying why, where this process cannot act as another user."""
    if os.getuid() != 0:
        pytest.skip("switching to another uid needs root (setpriv); this suite runs unprivileged")
    if not any(os.access(os.path.join(d, "setpriv"), os.X_OK) for d in os.get_exec_path()):
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


def probe(sock: Path, *, as_uid: int | None = None, gid: int | None = None) -> str:
    """What ``PROBE`` says from another process: one of ours, or ``as_uid``'s (needs root).

    Another uid's client trusts our daemon as a shared one (TUNED_DAEMON_UID), so
    only the daemon's own access check decides.
    """
    argv = [PY, "-c", PROBE.format(sock=str(sock))]
    env = dict(os.environ)
    if as_uid is not None:
        need_other_uids()
        gid = as_uid if gid is None else gid
        argv = ["setpriv", f"--reuid={as_uid}", f"--regid={gid}", "--clear-groups", *argv]
        env["TUNED_DAEMON_UID"] = str(os.getuid())
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def as_other_user(sock: Path, uid: int = 65534, gid: int = 65534) -> str:
    """What ``PROBE`` says as ``uid``."""
    return probe(sock, as_uid=uid, gid=gid)
