"""A zygote's children, each in one place: asked for, waiting (a spare), a trial, or gone.

The zygote forks children ahead of need; each connects and waits as a *spare*
until a trial is handed to it. What every child is now lives in one table
(``Children.kids``, by pid) beside the count of children asked for and not yet
arrived, and the trials waiting for a spare. No I/O: the zygote's connection
(``run.forkserver.Zygote``) sends the Spawn frames ``top_up`` asks for and
passes on what the zygote reports.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import anyio

from .launcher import LaunchSpec, signal_tree

SPARES_AHEAD = 2  # idle spares kept beyond those already promised to waiting trials


class ForkedTrial:
    """A trial process forked by a zygote; its exit status arrives over the socket."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None
        self.exited = anyio.Event()
        self.lost = ""

    def set_exit(self, code: int) -> None:
        if self.code is None:
            self.code = code
            self.exited.set()

    def set_lost(self, reason: str) -> None:
        """Its zygote died: so did it (PDEATHSIG), and its exit will never be reported."""
        if self.code is None:
            self.lost = reason
            self.set_exit(-9)

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.code is not None
        return self.code

    def signal(self, sig: signal.Signals) -> None:
        if self.code is None:
            signal_tree(self.pid, sig)
            return
        # Exited: the zygote killed and reaped what it left outside its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def exit_reason(self, code: int) -> str:
        return ""


class Spare:
    """A child, connected and waiting: ``assign`` makes it a trial, ``retire`` sends it away."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.launch: LaunchSpec | None = None
        self.decided = anyio.Event()

    def assign(self, launch: LaunchSpec) -> None:
        self.launch = launch
        self.decided.set()

    def retire(self) -> None:
        self.decided.set()


@dataclass
class Waiter:
    """A trial waiting for a spare; ``got`` is the spare, or why none comes (an error)."""

    arrived: anyio.Event = field(default_factory=anyio.Event)
    got: Spare | str | None = None

    def give(self, what: Spare | str) -> None:
        self.got = what
        self.arrived.set()


State = Literal["idle", "promised", "trial", "retired", "dead"]


@dataclass
class Kid:
    state: State
    spare: Spare | None = None
    trial: ForkedTrial | None = None


class Children:
    def __init__(self, ahead: int = SPARES_AHEAD) -> None:
        self.ahead = ahead
        self.asked = 0  # Spawn frames sent whose child has not said hello (or died) yet
        self.kids: dict[int, Kid] = {}  # by pid, in the order they arrived
        self.waiters: deque[Waiter] = deque()

    def idle(self) -> list[Spare]:
        return [k.spare for k in self.kids.values() if k.state == "idle" and k.spare is not None]

    def top_up(self) -> int:
        """How many more children to ask for: one for each waiter, and ``ahead`` spare."""
        want = max(0, len(self.waiters) + self.ahead - len(self.idle()) - self.asked)
        self.asked += want
        return want

    def hello(self, pid: int) -> Spare | None:
        """A child connected (pid from the kernel); None if it cannot be a new spare of ours."""
        if pid in self.kids:
            if self.kids[pid].state == "dead":
                del self.kids[pid]  # its exit was read first: it is gone
            return None
        self.asked -= 1
        spare = Spare(pid)
        if self.waiters:
            self.kids[pid] = Kid("promised", spare)
            self.waiters.popleft().give(spare)
        else:
            self.kids[pid] = Kid("idle", spare)
        return spare

    def spawn_failed(self, error: str) -> None:
        """The zygote could not fork a child: the first waiter learns why."""
        self.asked -= 1
        if self.waiters:
            self.waiters.popleft().give(error)

    def take(self) -> Spare | None:
        """The oldest idle spare, now promised to a trial; None if there is none."""
        for kid in self.kids.values():
            if kid.state == "idle":
                kid.state = "promised"
                return kid.spare
        return None

    def put_back(self, spare: Spare) -> None:
        """A promised spare whose trial stopped waiting: idle again."""
        kid = self.kids.get(spare.pid)
        if kid is not None and kid.state == "promised":
            kid.state = "idle"

    def forked(self, pid: int) -> ForkedTrial:
        """The promised spare is now its trial (before it can run, so its exit finds it)."""
        trial = ForkedTrial(pid)
        self.kids[pid] = Kid("trial", trial=trial)
        return trial

    def release(self, spare: Spare) -> None:
        """An idle spare leaves: its connection is closed, so it exits and is not replaced."""
        kid = self.kids.get(spare.pid)
        if kid is not None and kid.state in ("idle", "promised"):
            kid.state = "retired"
        spare.retire()

    def exited(self, pid: int, code: int) -> bool:
        """A child exited; whether a replacement may be needed (``top_up`` says how many)."""
        kid = self.kids.pop(pid, None)
        if kid is None:  # died before its hello was read: that hello is not a spare's
            self.asked -= 1
            self.kids[pid] = Kid("dead")
            return True
        if kid.trial is not None:
            kid.trial.set_exit(code)
            return False
        if kid.spare is not None and kid.state in ("idle", "promised"):
            kid.spare.retire()  # died waiting: its connection is closed
            return True
        return False  # retired: we sent it away

    def close(self) -> None:
        """The zygote is gone: wake every waiter, retire every spare, lose every trial."""
        while self.waiters:
            self.waiters.popleft().arrived.set()
        for kid in self.kids.values():
            if kid.spare is not None and kid.state in ("idle", "promised"):
                kid.spare.retire()
            if kid.trial is not None:  # it died with its zygote (PDEATHSIG)
                kid.trial.set_lost("the zygote that forked it exited")
        self.kids.clear()
