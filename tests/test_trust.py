"""A client talks only to its own user's daemon: a squatted socket gets nothing.

Another local user creates the socket's folder first (``/tmp/tuned-$UID`` when
``XDG_RUNTIME_DIR`` is unset) and listens there, answering like a daemon. The
library, the ``tuned`` command and trial workers must refuse it before sending a
byte, with an error naming the path and its owner. The squatter runs as
another uid (``setpriv``), in a sticky world-writable folder made for the test
(never the real ``/tmp/tuned-$UID``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, need_other_uids, socket_path
from tuned_client import trust
from tuned_client.connection import Connection
from tuned_client.session import Session

NOBODY = 65534

# A fake daemon: says Welcome to any hello, then keeps whatever it is sent.
IMPOSTOR = """
import os, socket, sys
from tuned_client import framing, protocol as p
folder = sys.argv[1]
os.mkdir(folder, 0o700)
srv = socket.socket(socket.AF_UNIX)
srv.bind(os.path.join(folder, "tuned.sock"))
srv.listen(16)
print("ready", flush=True)
got = open(os.path.join(folder, "received"), "ab", buffering=0)
while True:
    conn, _ = srv.accept()
    conn.settimeout(5)
    try:
        while True:
            body = framing.read_frame(conn)
            got.write(body)
            conn.sendall(framing.encode_frame(p.Welcome(protocol=p.PROTOCOL_VERSION,
                                                        daemon_version="0", pid=1)))
    except Exception:
        pass
    conn.close()
"""


@dataclass
class Squatter:
    folder: Path
    proc: subprocess.Popen[str]

    @property
    def socket(self) -> Path:
        return self.folder / "tuned.sock"

    def received(self) -> bytes:
        path = self.folder / "received"
        return path.read_bytes() if path.exists() else b""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder like /tmp: world-writable, sticky; removed with all it holds.

    It lives in the session's socket folder, which others may pass through (0711).
    """
    base = socket_path("squat").parent
    base.chmod(0o1777)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def squatter(shared_tmp: Path) -> Iterator[Squatter]:
    need_other_uids()
    folder = shared_tmp / f"tuned-{os.getuid()}"
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", IMPOSTOR, str(folder)],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(REPO / "client")},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    try:
        yield Squatter(folder, proc)
    finally:
        proc.kill()
        proc.wait()


def refusal_of_nobody(text: str, squat: Squatter) -> None:
    assert f"refusing to use the socket {squat.socket}" in text
    assert f"belongs to nobody (uid {NOBODY})" in text


@pytest.mark.root
def test_the_library_refuses_a_squatted_socket_and_sends_nothing(squatter: Squatter) -> None:
    with pytest.raises(trust.UntrustedSocket) as refused:
        Connection.open(squatter.socket, autostart=True)
    refusal_of_nobody(str(refused.value), squatter)
    assert squatter.received() == b""


@pytest.mark.root
def test_fit_sends_neither_code_nor_secrets_to_a_squatter(
    squatter: Squatter, tmp_path: Path
) -> None:
    script = tmp_path / "fit.py"
    script.write_text(
        "from tuned_client import tune\n"
        "tune.Tuner(lambda c: {'x': 1}, param_space={'a': tune.grid_search([1, 2])}).fit()\n"
    )
    env = {**os.environ, "TUNED_SOCKET": str(squatter.socket), "HF_TOKEN": "hf_secret_42",
           "TUNED_STORAGE_PATH": str(tmp_path / "results")}  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    refusal_of_nobody(out.stderr, squatter)
    assert squatter.received() == b""


@pytest.mark.root
@pytest.mark.parametrize("command", [["status"], ["start", "--num-cpus", "1"], ["stop"]])
def test_the_cli_refuses_a_squatted_socket(
    squatter: Squatter, tmp_path: Path, command: list[str]
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tuned", *command, "--socket", str(squatter.socket),
         *(["--state-dir", str(tmp_path / "state")] if command[0] == "start" else [])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    refusal_of_nobody(out.stderr, squatter)
    assert "already running" not in out.stderr
    assert squatter.received() == b""


@pytest.mark.root
def test_a_trial_worker_refuses_a_squatted_socket(squatter: Squatter) -> None:
    with pytest.raises(trust.UntrustedSocket) as refused:
        Session.connect(str(squatter.socket), "abcde_00000", "token")
    refusal_of_nobody(str(refused.value), squatter)
    assert squatter.received() == b""


@pytest.mark.root
def test_a_listener_of_another_uid_is_refused_even_in_our_own_folder(shared_tmp: Path) -> None:
    """Our folder, but someone else listening (the folder was theirs for a moment)."""
    need_other_uids()
    folder = shared_tmp / "ours"
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)  # let them bind there...
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", IMPOSTOR, str(folder / "inner")],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(REPO / "client")},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        inner = folder / "inner"
        os.chown(inner, 0, 0)  # ...then the folder is ours again, their socket still there
        with pytest.raises(trust.UntrustedSocket) as refused:
            Connection.open(inner / "tuned.sock", autostart=False)
        assert "the process listening there runs as nobody (uid 65534)" in str(refused.value)
        assert not (inner / "received").exists() or (inner / "received").read_bytes() == b""
    finally:
        proc.kill()
        proc.wait()


def test_a_folder_others_can_write_to_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(trust.UntrustedSocket) as refused:
        Connection.open(folder / "tuned.sock", autostart=False)
    assert "is writable by others (mode 0777)" in str(refused.value)


@pytest.mark.root
def test_a_named_daemon_uid_is_trusted_and_no_other(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TUNED_DAEMON_UID names the owner of a shared daemon; only that uid is added."""
    folder = shared_tmp / "theirs"
    folder.mkdir(mode=0o711)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(trust.UntrustedSocket):
        trust.check_folder(folder / "tuned.sock")
    monkeypatch.setenv(trust.DAEMON_UID_VAR, "nobody")
    trust.check_folder(folder / "tuned.sock")  # trusted now: nothing raised
    monkeypatch.setenv(trust.DAEMON_UID_VAR, "65533")
    with pytest.raises(trust.UntrustedSocket):
        trust.check_folder(folder / "tuned.sock")
