"""A real ``tuned web`` process for the page's tests, and plain HTTP requests to it."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from conftest import RunningDaemon


@dataclass
class WebProcess:
    proc: subprocess.Popen[str]
    url: str  # as printed: http://127.0.0.1:PORT/?token=...

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    @property
    def token(self) -> str:
        return urlsplit(self.url).query.removeprefix("token=")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request; ``auth`` sends the token as the page's script does (a header)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        if auth:
            sent.setdefault("X-Tuned-Token", self.token)
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            if resp.getheader("content-type", "").startswith("text/event-stream"):
                data = resp.readline() + resp.readline()  # the first event only
            else:
                data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def cancel(self, target: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = {
            "Origin": self.origin,
            "X-Tuned-Token": self.token,
            "Content-Type": "application/json",
            **(headers or {}),
        }
        sent = {k: v for k, v in sent.items() if v}
        status, _, body = self.request(
            "POST", "/api/cancel", sent, json.dumps({"target": target}).encode(), auth=False
        )
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def start_web(d: RunningDaemon) -> WebProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuned", "web", "--socket", str(d.socket)],
        env=d.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "http://" in line:
            return WebProcess(proc, line.strip())
    raise AssertionError(f"tuned web printed no URL: {proc.stderr.read() if proc.stderr else ''}")
