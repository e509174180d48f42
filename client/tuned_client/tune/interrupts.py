"""Ctrl-C while an experiment is handed to the daemon: kept until fit() can act on it.

``fit()`` stops an experiment on Ctrl-C once it follows it (``Follower.follow``
cancels it and returns what it has, as Ray's ``fit()`` does). Between the
submit and that point (the submit's reply, saving the Tuner, setting up the
callbacks) a Ctrl-C would raise where nothing catches it: the script would
die and leave a detached experiment running. ``held`` records it instead, as
Ray's own SIGINT handler records one for its loop to see.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def held() -> Iterator[list[bool]]:
    """SIGINT recorded, not raised, in the body: ``[True]`` once one came. A second
    one raises ``KeyboardInterrupt`` as usual (a daemon that does not answer the
    submit must not make Ctrl-C useless), as a second Ctrl-C ends ``follow``.

    Only the main thread can set a handler; elsewhere (a notebook's worker
    thread) nothing changes.
    """
    came = [False]
    if threading.current_thread() is not threading.main_thread():
        yield came
        return

    def record(signum: int, frame: FrameType | None) -> None:
        if came[0]:
            raise KeyboardInterrupt
        came[0] = True

    before = signal.signal(signal.SIGINT, record)
    try:
        yield came
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
