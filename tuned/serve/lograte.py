"""Bounded logging for what can happen thousands of times a second.

A burst of connections over a cap, or an error the event loop reports once per
ready callback, must not write a line each: a daemon that lives for months
would fill its disk with them. ``Throttle`` lets one line per key through per
interval and counts the rest into the next line; ``loop_exception_handler``
sends what the event loop could not deliver to the log, through a throttle,
instead of as raw tracebacks on stderr (``daemon.out``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("tuned.loop")

INTERVAL_S = 1.0


class Throttle:
    """At most one line per key per ``interval``; the next says how many were held back."""

    def __init__(self, interval: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None to hold this line back; else how many lines of ``key`` were held before it."""
        now = self.clock()
        if now - self._last.get(key, -float("inf")) < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


def is_stale_wakeup(context: dict[str, Any]) -> bool:
    """A socket's readiness callback woke a future that was already cancelled.

    anyio waits for a socket with ``loop.add_reader(fd, future.set_result, None)``
    and removes the reader in the future's done callback, one turn later. A wait
    cancelled (a timeout, a closed connection) in the turn where its socket
    became ready makes the loop call ``set_result`` on a cancelled future:
    ``InvalidStateError``. Nothing is lost (the wait was over); it is noise.
    """
    exc = context.get("exception")
    return isinstance(exc, asyncio.InvalidStateError) and "set_result" in repr(
        context.get("handle", "")
    )


def loop_exception_handler(throttle: Throttle) -> Callable[[Any, dict[str, Any]], None]:
    def handle(loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        stale = is_stale_wakeup(context)
        key = "stale wakeup" if stale else f"{type(exc).__name__}: {context.get('message')}"
        held = throttle.allow(key)
        if held is None:
            return
        if stale:
            log.debug("a cancelled socket wait was woken (harmless)", held_back=held)
        else:
            log.error(
                "unhandled error in the event loop",
                message=context.get("message"),
                exc_info=exc,
                held_back=held,
            )

    return handle
