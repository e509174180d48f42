"""Waiting on other processes without sleeping: gates, barriers and one bounded poll.

A trial runs in another process (forked by the daemon's zygote, or on a Ray
worker), so a test cannot hand it a ``threading.Event``. What crosses is a path:

- ``Gate``: the test holds an exclusive ``flock`` on a file; a trial that calls
  ``pass_gate(path)`` blocks in the kernel until the test opens the gate, and
  every later trial passes at once. No polling, nothing to time.
- ``Barrier``: ``parties`` trials meet before any goes on. Each writes a byte
  into a FIFO that a thread of the test reads; at the last byte the thread opens
  the barrier's gate. A test that expects "N trials at once" needs no span long
  enough for slow starts: the N are live together however slowly they start.
- ``wait_until``: the one poll, for what gives no event (another process's file,
  a screen, a process reaped by init). It is bounded and says what it waited for.

This module imports nothing beyond the standard library: trial processes import
it (through the test module that defines their trainable).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

T = TypeVar("T")

# A command trial's whole wait (``python -c GATE_WAIT <gate>``): the inline form of pass_gate.
GATE_WAIT = "import fcntl, sys\nwith open(sys.argv[1]) as g: fcntl.flock(g, fcntl.LOCK_SH)\n"


class Gate:
    """Closed from creation until ``open()``; trials wait at it with ``pass_gate``.

    A gate the test never opens (a trial that must run until cancelled) is opened
    when the test ends, after its daemons are stopped (conftest's ``isolated``).
    """

    made: ClassVar[list[Gate]] = []

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        Gate.made.append(self)

    def open(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def pass_gate(path: str | os.PathLike[str]) -> None:
    """Block until the gate at ``path`` is open (at once if it already is)."""
    with open(path) as gate:
        fcntl.flock(gate, fcntl.LOCK_SH)


class Barrier:
    """``parties`` trials (``arrive(folder)``) meet; then they and all later ones go on."""

    def __init__(self, folder: Path, parties: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.parties = parties
        self.gate = Gate(folder / "gate")
        os.mkfifo(folder / "arrivals")
        # Read and write: the open does not wait for a writer, and the FIFO never
        # reports end-of-file (nor refuses a late trial's open) while we hold it.
        self._fifo = os.open(folder / "arrivals", os.O_RDWR | os.O_CLOEXEC)
        self.arrived = 0
        self._counter = threading.Thread(target=self._count, daemon=True)
        self._counter.start()

    def _count(self) -> None:
        while self.arrived < self.parties:
            self.arrived += len(os.read(self._fifo, self.parties - self.arrived))
        self.gate.open()

    def close(self) -> None:
        """Open the gate (so nothing waits forever on a failed test) and let go of the FIFO."""
        self.gate.open()
        if self._counter.is_alive():
            os.write(self._fifo, b"x" * (self.parties - self.arrived))  # ends the count
            self._counter.join()
        os.close(self._fifo)


def arrive(folder: str | os.PathLike[str]) -> None:
    """A trial's side of ``Barrier``: say so, then wait for the others."""
    fifo = os.open(os.path.join(folder, "arrivals"), os.O_WRONLY)
    try:
        os.write(fifo, b"x")
    finally:
        os.close(fifo)
    pass_gate(os.path.join(folder, "gate"))


def wait_until(probe: Callable[[], T], what: str, timeout: float = 60, every: float = 0.02) -> T:
    """Poll ``probe`` until it returns something true, and return that; fail saying ``what``.

    Only for what no event announces: a file another process writes, a terminal's
    screen, an orphan reaped by init. The bound is generous (a loaded machine is
    slow, not wrong) and the test's own timeout bounds it again.
    """
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)
    return value
