"""``tuned web`` over real HTTP: nothing without the token, no CSRF, no rebinding, no
path tricks; the stream's first event and a cancel that ends a trial. The browser
tests are in test_web_browser.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import RunningDaemon, tuned_bg, tuned_ok
from gates import GATE_WAIT, Gate
from webpage import WebProcess, start_web

PY = sys.executable
WAIT = "print('hello from the trial', flush=True)\n" + GATE_WAIT  # until its gate opens


@pytest.fixture
def web(daemon: RunningDaemon) -> Iterator[WebProcess]:
    w = start_web(daemon)
    yield w
    w.stop()


def submit(d: RunningDaemon, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(tuned_ok(d, "submit", "--json", *args).splitlines()[0])
    return result


def wait_event(d: RunningDaemon, experiment: str, kind: str) -> dict[str, Any]:
    """Follow the experiment's events (from its start) to the first of ``kind``."""
    tail = tuned_bg(d, "tail", "--json", experiment)
    assert tail.stdout is not None
    try:
        for line in tail.stdout:
            ev: dict[str, Any] = json.loads(line)
            if ev["kind"] == kind:
                return ev
        raise AssertionError(f"no {kind} event")
    finally:
        tail.kill()
        tail.wait()


PROTECTED = ["/api/stream", "/api/trial/x", "/api/trial/x/stdout", "/api/auth"]


def test_nothing_is_served_without_the_token(web: WebProcess) -> None:
    for path in PROTECTED:
        assert web.request("GET", path, auth=False)[0] == 403, path
        bad = {"X-Tuned-Token": f"{web.token[:-1]}x"}
        assert web.request("GET", path, bad, auth=False)[0] == 403, path
        assert web.request("GET", f"{path}?token=nope", auth=False)[0] == 403, path
    assert web.request("GET", "/api/auth")[0] == 200
    assert web.request("GET", f"/api/auth?token={web.token}", auth=False)[0] == 200
    # The page's shell and code hold no secret: they load without the token, and the
    # printed URL's token is left to the page's script (no cookie, no token in the HTML).
    for path in ("/", f"/?token={web.token}", "/static/app.js"):
        status, headers, body = web.request("GET", path, auth=False)
        assert status == 200 and "set-cookie" not in headers, path
        assert web.token.encode() not in body, path
    status, headers, body = web.request("GET", "/", auth=False)
    assert status == 200 and b"app.js" in body
    assert (
        headers["referrer-policy"] == "no-referrer"
        and "frame-ancestors 'none'" in (headers["content-security-policy"])
    )


def test_another_host_name_is_refused_even_with_the_token(web: WebProcess) -> None:
    """DNS rebinding: a site whose name now points at 127.0.0.1 still sends its name."""
    for host in (f"evil.example:{web.port}", "127.0.0.1", f"127.0.0.1:{web.port + 1}"):
        status, _, body = web.request("GET", "/", {"Host": host})
        assert status == 403 and b"Host" in body, host
    assert web.request("GET", "/", {"Host": f"localhost:{web.port}"})[0] == 200


def test_cancel_needs_the_page_origin_and_the_token_header(
    daemon: RunningDaemon, web: WebProcess, tmp_path: Path
) -> None:
    never = Gate(tmp_path / "never")  # the trial runs until cancelled
    exp = submit(daemon, "--", PY, "-c", WAIT, str(never))
    trial = exp["trial_ids"][0]
    wait_event(daemon, exp["experiment_id"], "trial_started")
    # A form or script on another site can send neither the token header nor our Origin.
    assert web.cancel(trial, {"Origin": "http://evil.example"})[0] == 403
    assert web.cancel(trial, {"Origin": ""})[0] == 403
    assert web.cancel(trial, {"X-Tuned-Token": ""})[0] == 403
    assert web.cancel(trial, {"X-Tuned-Token": "x" * len(web.token)})[0] == 403
    assert web.cancel(trial, {"Content-Type": "text/plain"})[0] == 415
    assert web.cancel("f00d0_00000") == (404, {"error": "no experiment or trial 'f00d0_00000' "
                                                        "(see `tuned ls`)"})  # fmt: skip
    assert web.cancel("../x")[0] == 404
    # The real page's request ends the trial, as `tuned cancel` does.
    assert web.cancel(trial) == (200, {"cancelled": trial})
    ended = wait_event(daemon, exp["experiment_id"], "trial_finished")
    assert ended["trial_id"] == trial and ended["status"] == "ERROR"


def test_logs_only_of_a_trial_and_never_through_a_link(
    daemon: RunningDaemon, web: WebProcess, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not for the page")
    gate = Gate(tmp_path / "go")
    exp = submit(daemon, "--", PY, "-c", WAIT, str(gate))
    trial = exp["trial_ids"][0]
    started = wait_event(daemon, exp["experiment_id"], "trial_started")
    status, _, body = web.request("GET", f"/api/trial/{trial}/stdout")
    assert (status, body) == (200, b"hello from the trial\n")
    for path in (
        f"/api/trial/{trial}/params.json",
        f"/api/trial/{trial}/..%2F..%2Fsecret",
        "/api/trial/..%2F..%2F..%2Fetc/stdout",
        f"/api/trial/{trial}/..",
        "/static/..%2Fguard.py",
        "/static/../guard.py",
    ):
        status, _, body = web.request("GET", path)
        assert status == 404 and b"not for the page" not in body, path
    stderr = Path(started["trial_dir"]) / "stderr"
    stderr.unlink()
    os.symlink(secret, stderr)  # planted in the trial's folder
    status, _, body = web.request("GET", f"/api/trial/{trial}/stderr")
    assert status == 200 and body == b""
    gate.open()


def test_the_stream_starts_with_every_experiment(
    daemon: RunningDaemon, web: WebProcess, tmp_path: Path
) -> None:
    gate = Gate(tmp_path / "go")
    exp = submit(daemon, "--name", "streamed", "--grid", "i=1,2", "--", PY, "-c", WAIT, str(gate))
    wait_event(daemon, exp["experiment_id"], "trial_started")
    status, headers, body = web.request("GET", "/api/stream")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    first = json.loads(body.removeprefix(b"data: "))
    assert first["kind"] == "overview"
    [row] = first["experiments"]
    assert row["id"] == exp["experiment_id"] and row["name"] == "streamed" and row["total"] == 2
    gate.open()


def test_the_daemon_opens_no_port_and_the_page_listens_on_loopback_only(
    daemon: RunningDaemon, web: WebProcess
) -> None:
    assert psutil.Process(daemon.proc.pid).net_connections(kind="inet") == []
    listening = [
        c for c in psutil.Process(web.proc.pid).net_connections(kind="inet") if c.status == "LISTEN"
    ]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", web.port)]


def test_tuned_web_without_a_daemon_says_so(tmp_path: Path) -> None:
    out = subprocess.run(
        [PY, "-m", "tuned", "web", "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "no tuned daemon is listening" in out.stderr


def test_the_live_websocket_refuses_other_origins(web: WebProcess) -> None:
    """A cross-site WebSocket handshake is refused on its Origin, even with the token."""
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    for origin in ("http://evil.example", ""):
        headers = {**upgrade, "Origin": origin} if origin else upgrade
        assert web.request("GET", "/api/live", headers)[0] == 403, origin
    assert web.request("GET", "/api/live", {**upgrade, "Origin": web.origin}, auth=False)[0] == 403
    assert web.request("GET", "/api/live", {**upgrade, "Origin": web.origin})[0] == 101
