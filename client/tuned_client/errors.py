"""The errors the client raises: one small tree, so callers can catch what they mean."""

from __future__ import annotations


class TunedError(Exception):
    """Base of the errors the client raises."""


class DaemonUnavailable(TunedError):
    """No daemon listens on the socket and none could be started."""


class DaemonError(TunedError):
    """The daemon refused a request; ``code`` says why in one word."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
