"""Who may use the page: the token holder, from this machine, from the page itself.

The web process runs as the user and can cancel anything the user runs, so
every request passes these checks before any route, static file or stream:

- **Host** must be ``127.0.0.1:PORT`` or ``localhost:PORT``: a page from
  another site that rebinds its DNS name to 127.0.0.1 sends its own name and
  is refused (DNS rebinding).
- **Token**: the ``?token=`` of the printed URL, or the cookie set on the first
  visit (HttpOnly, SameSite=Strict, one per port), compared in constant time.
  A first visit with the token is redirected to the bare URL, so the token
  leaves the address bar and history.
- **Changes** (any method but GET/HEAD) also need ``Origin`` to be this page's
  own origin and the token in an ``X-Tuned-Token`` header (the page has it;
  another site's form or script cannot read or set it): no CSRF. The live
  WebSocket needs this page's ``Origin`` too (no cross-site WebSocket hijacking).

Responses carry a strict Content-Security-Policy, no-referrer (the token never
leaks in a Referer), no-store, and deny framing.
"""

from __future__ import annotations

import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
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


class Guard:
    """ASGI middleware: refuses a request unless every check above passes."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token
        self.port = port
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.cookie = f"tuned_web_{port}"

    def _has_token(self, text: str | None) -> bool:
        return text is not None and secrets.compare_digest(text.encode(), self.token.encode())

    def check(self, scope: Scope) -> tuple[Response | None, bool]:
        """(a refusal or None, whether the token came in the query string)."""
        headers = Headers(scope=scope)
        if headers.get("host") not in self.hosts:
            return PlainTextResponse("tuned web: unknown Host", status_code=403), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        in_query = self._has_token((query.get("token") or [None])[0])
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:
            jar = SimpleCookie()
        morsel = jar.get(self.cookie)
        if not (in_query or self._has_token(morsel.value if morsel else None)):
            return PlainTextResponse(
                "tuned web: open the URL with the token that `tuned web` printed",
                status_code=403,
            ), False
        if scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS:
            if headers.get("origin") not in self.origins:
                return PlainTextResponse("tuned web: bad Origin", status_code=403), False
            if scope["type"] == "http" and not self._has_token(headers.get("x-tuned-token")):
                return PlainTextResponse("tuned web: missing X-Tuned-Token", status_code=403), False
        return None, in_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal, in_query = self.check(scope)
        if scope["type"] == "websocket":  # a browser sends cookies cross-site: Origin decides
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
        if in_query and scope.get("method") == "GET" and scope.get("path") == "/":
            first = RedirectResponse("/", status_code=303)
            first.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
            await first(scope, receive, send_secure)
            return
        await self.app(scope, receive, send_secure)
