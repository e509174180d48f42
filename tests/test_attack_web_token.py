"""The page's token never reaches another local user's server on another loopback port.

Found by attack: the first visit traded the token for a cookie
``tuned_web_PORT=TOKEN``. Browsers send a host's cookies to every port of it,
so when the user later opened a page another local user served on
``127.0.0.1:OTHER`` (a link to "my tuned web"), that server received the token
and the port, and could then read every trial's logs and cancel anything the
user runs. The token now travels only in a header, the WebSocket's subprotocol
or the query, and the page keeps it in its origin's (per-port) localStorage.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from webpage import WebProcess, start_web

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def web(daemon: RunningDaemon) -> Iterator[WebProcess]:
    w = start_web(daemon)
    yield w
    w.stop()


def test_no_response_sets_a_cookie_and_a_cookie_opens_nothing(web: WebProcess) -> None:
    for path in ("/", f"/?token={web.token}", "/static/app.js", "/api/auth", "/api/trial/x"):
        status, headers, _ = web.request("GET", path)
        assert "set-cookie" not in headers, path
    jar = {"Cookie": f"tuned_web_{web.port}={web.token}"}  # what a browser held before
    for path in ("/api/auth", "/api/stream", "/api/trial/x/stdout"):
        assert web.request("GET", path, jar, auth=False)[0] == 403, path
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Origin": web.origin,
    }
    assert web.request("GET", "/api/live", {**upgrade, **jar}, auth=False)[0] == 403
    offered = {**upgrade, "Sec-WebSocket-Protocol": f"tuned, tuned-token.{web.token}"}
    status, headers, _ = web.request("GET", "/api/live", offered, auth=False)
    assert status == 101 and headers["sec-websocket-protocol"] == "tuned"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(str(self.headers) + self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html><body>another user's page</body></html>")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)
def test_a_page_on_another_loopback_port_gets_no_token(web: WebProcess, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait
    from test_web_browser import chrome_options

    other = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    serving = threading.Thread(target=other.serve_forever, daemon=True)
    serving.start()
    drv = webdriver.Chrome(service=Service(str(DRIVER)), options=chrome_options(tmp_path / "p"))
    try:
        drv.get(web.url)
        live = "return document.getElementById('conn').textContent === 'live'"
        WebDriverWait(drv, 60, poll_frequency=0.05).until(lambda d: d.execute_script(live))
        drv.get(f"http://127.0.0.1:{other.server_address[1]}/a-link")
        assert "another user's page" in drv.find_element("tag name", "body").text
        drv.get(f"http://127.0.0.1:{web.port}/")  # back: the page still has its token
        WebDriverWait(drv, 60, poll_frequency=0.05).until(lambda d: d.execute_script(live))
    finally:
        drv.quit()
        other.shutdown()
        other.server_close()
    assert _Recorder.seen, "the other server saw no request"
    assert not any(web.token in request for request in _Recorder.seen), _Recorder.seen
