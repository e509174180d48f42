"""A zygote's children: asked for, waiting as spares, trials, gone; each in one place.

The bookkeeping (``run.spares.Children``) as a unit, then the daemon's end of a
zygote (``run.forkserver.Zygote``) against a fake zygote on a socket pair: the
test reads the Spawn frames it sends and answers as the zygote would.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import msgspec
import pytest
from tuned_client import zygote as z

from tuned.run.forkserver import Zygote, ZygoteGone
from tuned.run.launcher import LaunchSpec
from tuned.run.spares import Children, Spare, Waiter

SPEC = LaunchSpec(["python"], {}, "/", Path("/dev/null"), Path("/dev/null"))


def test_children_are_asked_for_ahead_and_replaced_only_when_lost() -> None:
    kids = Children(ahead=2)
    assert kids.top_up() == 2 and kids.top_up() == 0  # two on their way already
    first, second = kids.hello(101), kids.hello(102)
    assert first is not None and second is not None and kids.idle() == [first, second]
    assert kids.take() is first and kids.top_up() == 1  # one taken: one more asked for
    kids.forked(101)
    assert not kids.exited(101, 0)  # a trial's exit: nothing to replace
    kids.release(second)
    assert second.decided.is_set() and not kids.exited(102, 0)  # retired: not replaced


def test_a_child_that_dies_before_its_hello_is_refused_when_it_comes() -> None:
    kids = Children(ahead=1)
    assert kids.top_up() == 1
    assert kids.exited(201, -9)  # died before its hello was read: ask for another
    assert kids.hello(201) is None and 201 not in kids.kids
    assert kids.top_up() == 1


def test_waiters_get_spares_in_order_and_a_failed_fork_tells_the_first() -> None:
    kids = Children(ahead=0)
    first, second = Waiter(), Waiter()
    kids.waiters.extend([first, second])
    assert kids.top_up() == 2
    kids.spawn_failed("fork: out of memory")
    spare = kids.hello(301)
    assert first.got == "fork: out of memory" and second.got is spare
    assert kids.kids[301].state == "promised"
    assert isinstance(spare, Spare)
    kids.put_back(spare)  # its trial stopped waiting: the spare is idle again
    assert kids.idle() == [spare]


def test_closing_wakes_waiters_and_loses_trials() -> None:
    kids = Children(ahead=1)
    kids.top_up()
    waiter = Waiter()
    kids.waiters.append(waiter)
    spare = kids.hello(401)
    assert spare is not None
    kids.waiters.append(Waiter())
    trial = kids.forked(401)
    kids.close()
    assert waiter.arrived.is_set() and trial.code == -9
    assert trial.lost == "the zygote that forked it exited"


class FakeZygote:
    """The zygote's side of the control socket: reads Spawn frames, reports exits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = z.FrameBuffer(msgspec.msgpack.Decoder(z.Spawn))

    async def spawns(self, n: int) -> list[z.Spawn]:
        got: list[z.Spawn] = []
        while len(got) < n:
            await anyio.wait_readable(self.sock)
            got += self.frames.feed(self.sock.recv(1 << 16))
        return got

    def say(self, message: object) -> None:
        self.sock.sendall(z.encode(message))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the daemon's loop (uvloop's is asyncio's)


@pytest.mark.anyio
async def test_the_daemons_end_of_a_zygote_over_a_socket_pair() -> None:
    ours, theirs = socket.socketpair()
    zygote = Zygote("exp:1")
    zygote.attach(ours)
    fake = FakeZygote(theirs)
    fake.say(z.Ready(pid=999))
    result: dict[str, int] = {}

    async def run_trial() -> None:
        trial = await zygote.fork(SPEC)
        result["code"] = await trial.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_trial)
        spawns = await fake.spawns(3)  # one for the waiting trial, two ahead
        assert {s.token for s in spawns} == {zygote.token}
        spare = zygote.adopt(501)  # the child's hello, its pid from SO_PEERCRED
        assert spare is not None
        await spare.decided.wait()
        assert spare.launch is SPEC  # handed the trial
        fake.say(z.Exited(pid=501, code=3))
    assert result == {"code": 3}
    ahead = zygote.adopt(777)  # a spare asked for ahead
    assert ahead is not None and await zygote.take() is ahead
    theirs.close()  # the zygote dies: a trial waiting for a spare learns it
    with anyio.fail_after(10), pytest.raises(ZygoteGone):
        await zygote.take()
    assert zygote.gone and ahead.decided.is_set()  # promised, never run: sent away
    ours.close()
