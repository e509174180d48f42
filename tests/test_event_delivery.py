"""The event bus delivers a quiet stream at once and a busy one in paced batches."""

from __future__ import annotations

import time

import anyio
from tuned_client import protocol as p

from tuned.serve import events
from tuned.serve.events import EventBus, Subscriber


def _result(bus: EventBus, experiment_id: str = "e") -> p.TrialResult:
    event = p.TrialResult(
        seq=bus.next_seq(),
        ts=0.0,
        experiment_id=experiment_id,
        trial_id=f"{experiment_id}_00000",
        metrics=p.pack_user({"i": bus.seq}),
    )
    bus.publish(event)
    return event


def _seqs(sub: Subscriber) -> list[int]:
    return [seq for seq, _frame in sub.queue]


def test_a_quiet_stream_is_delivered_at_once() -> None:
    async def main() -> None:
        bus = EventBus(history=100, subscriber_buffer=100)
        sub = bus.subscribe("")
        first = _result(bus)
        assert _seqs(sub) == [first.seq] and sub.wakeup.is_set()

    anyio.run(main)


def test_a_busy_stream_goes_to_every_subscriber_in_one_paced_delivery() -> None:
    async def main() -> None:
        bus = EventBus(history=100, subscriber_buffer=100)
        every, only_f, only_g = bus.subscribe(""), bus.subscribe("f"), bus.subscribe("g")
        first = _result(bus, "e")  # quiet until now: delivered at once
        started = time.monotonic()
        rest = [_result(bus, exp) for exp in ("f", "e", "f")]
        assert _seqs(every) == [first.seq]  # the rest waits for the interval
        late = bus.subscribe("")  # subscribed after they were published: never gets them
        while len(every.queue) < 4:
            await every.wait()
        waited = time.monotonic() - started
        assert waited >= bus.delivery_interval() * 0.9
        assert _seqs(every) == [first.seq, *(e.seq for e in rest)]
        assert _seqs(only_f) == [rest[0].seq, rest[2].seq]
        assert _seqs(only_g) == [] and not only_g.wakeup.is_set()
        assert _seqs(late) == []
        newer = _result(bus, "e")
        while not late.queue:
            await late.wait()
        assert _seqs(late) == [newer.seq]

    anyio.run(main)


def test_the_interval_grows_with_the_subscribers_up_to_a_cap() -> None:
    bus = EventBus(history=10, subscriber_buffer=10)
    assert bus.delivery_interval() == events.DELIVERY_S
    for _ in range(1000):
        bus.subscribe("")
    assert bus.delivery_interval() == events.MAX_DELIVERY_S


def test_a_full_subscriber_is_marked_lagging_with_what_fitted() -> None:
    bus = EventBus(history=100, subscriber_buffer=3)
    sub = bus.subscribe("")  # no loop running: each event is delivered as it comes
    published = [_result(bus) for _ in range(5)]
    assert sub.lagging
    assert _seqs(sub) == [e.seq for e in published[:3]]
    missed = bus.history_after(3, "")
    assert missed is not None and [seq for seq, _ in missed] == [4, 5]
