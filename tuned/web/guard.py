"""Who may use the page: the token holder, from this machine, from the page itself.

The web process runs as the user and can cancel anything the user runs, so
every request passes these checks before any route or stream:

- **Host** must be ``127.0.0.1:PORT`` or ``localhost:PORT``: a page from
  another site that rebinds its DNS name to 127.0.0.1 sends its own name and
  is refused (DNS rebinding).
- **Token** on every request for data or a change: the ``X-Tuned-Token``
  header the page's script sends, the ``tuned-token.TOKEN`` subprotocol of its
  WebSocket, or ``?token=`` (for curl and other clients), compared in constant
  time. Never a cookie: browsers send a cookie of ``127.0.0.1`` to *every* port
  of it, so another local user's server on another port, opened once in the
  same browser, would receive it. The page's script keeps the token in its
  origin's ``localStorage`` (which is per port) and takes it out of the
  address bar. The page's shell and its static files hold no secret and load
  without it.
- **Changes** (any method but GET/HEAD) also need ``Origin`` to be this page's
  own origin and the token in the header (another site's form or script
  cannot set it): no CSRF. The live WebSocket needs this page's ``Origin`` too
  (no cross-site WebSocket hijacking).

Responses carry a strict Content-Security-Policy, no-referrer (the token never
leaks in a Referer), no-store, and deny framing.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
     b"style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
     b"base-uri 'none'; form-action 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]  # fmt: skip


WS_PROTOCOL = "tuned"  # the page's WebSocket offers it with "tuned-token.TOKEN"
WS_TOKEN_PREFIX = "tuned-token."


def is_shell(scope: Scope) -> bool:
    """The page's HTML and static files: they hold no secret, so load without the token."""
    path = scope.get("path", "")
    return (
        scope["type"] == "http"
        and scope.get("method", "GET") in SAFE_METHODS
        and (path == "/" or path.startswith("/static/"))
    )


class Guard:
    """ASGI middleware: refuses a request unless every check above passes."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token
        self.port = port
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{h}" for h in self.hosts}

    def _has_token(self, text: str | None) -> bool:
        return text is not None and secrets.compare_digest(text.encode(), self.token.encode())

    def _presented(self, scope: Scope, headers: Headers) -> bool:
        """Whether the request carries the token: header, WebSocket subprotocol, or query."""
        if self._has_token(headers.get("x-tuned-token")):
            return True
        for offered in scope.get("subprotocols", ()) if scope["type"] == "websocket" else ():
            if offered.startswith(WS_TOKEN_PREFIX) and self._has_token(
                offered.removeprefix(WS_TOKEN_PREFIX)
            ):
                return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return self._has_token((query.get("token") or [None])[0])

    def check(self, scope: Scope) -> Response | None:
        """A refusal, or None to serve the request."""
        headers = Headers(scope=scope)
        if headers.get("host") not in self.hosts:
            return PlainTextResponse("tuned web: unknown Host", status_code=403)
        if is_shell(scope):
            return None
        if not self._presented(scope, headers):
            return PlainTextResponse(
                "tuned web: open the URL with the token that `tuned web` printed",
                status_code=403,
            )
        if scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS:
            if headers.get("origin") not in self.origins:
                return PlainTextResponse("tuned web: bad Origin", status_code=403)
            if scope["type"] == "http" and not self._has_token(headers.get("x-tuned-token")):
                return PlainTextResponse("tuned web: missing X-Tuned-Token", status_code=403)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if scope["type"] == "websocket":
            if refusal is not None:
                await send({"type": "websocket.close", "code": 1008})
            else:
                await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_secure)
            return
        await self.app(scope, receive, send_secure)
