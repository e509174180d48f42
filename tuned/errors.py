"""The daemon's refusal: an error code and a message written for the person who asked."""

from __future__ import annotations

from tuned_client import protocol as p


class Refused(Exception):
    """A request the daemon will not carry out; the message is for the user."""

    def __init__(self, code: p.ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
