"""What can happen thousands of times a second writes a bounded number of log lines."""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import RunningDaemon

from tuned.serve.lograte import Throttle, is_stale_wakeup, loop_exception_handler


def test_a_throttle_lets_one_line_a_second_through_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(interval=1.0, clock=lambda: now[0])
    assert throttle.allow("refused") == 0
    assert [throttle.allow("refused") for _ in range(99)] == [None] * 99
    assert throttle.allow("other") == 0  # keys are counted apart
    now[0] = 1.0
    assert throttle.allow("refused") == 99  # the next line says how many were held back


def test_a_cancelled_wait_woken_by_its_socket_is_recognised_as_noise() -> None:
    loop = asyncio.new_event_loop()
    try:
        future: asyncio.Future[None] = loop.create_future()
        future.cancel()
        handle = asyncio.Handle(future.set_result, (None,), loop)
        try:
            future.set_result(None)
        except asyncio.InvalidStateError as exc:
            context = {"message": "Exception in callback", "exception": exc, "handle": handle}
        assert is_stale_wakeup(context)
        assert not is_stale_wakeup({"message": "x", "exception": ValueError("boom")})
        handler = loop_exception_handler(Throttle())
        handler(loop, context)  # logged (at debug), never raised or printed raw
    finally:
        loop.close()


@pytest.mark.daemon_args("--num-cpus", "1", "--max-connections-per-client", "4")
def test_a_burst_of_refused_connections_writes_a_few_lines(daemon: RunningDaemon) -> None:
    held = []
    for _ in range(300):  # all from this process: every one past the 4th is refused
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket))
        held.append(sock)
    for sock in held[4:]:
        assert sock.recv(1 << 16)  # the refusal, sent before anything was read
    for sock in held:
        sock.close()
    with daemon.connect():
        pass  # a round trip after the burst: its log lines are written
    refused = [x for x in daemon.log.splitlines() if "connection refused" in x]
    assert 1 <= len(refused) <= 20, len(refused)  # 296 refusals
