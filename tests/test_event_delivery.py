"""The event bus delivers a quiet stream at once and a busy one in paced batches, in bounds."""

from __future__ import annotations

import time

import anyio
from tuned_client import protocol as p

from tuned.serve import events
from tuned.serve.events import ENTRY_OVERHEAD, EventBus, Subscriber


def _result(bus: EventBus, experiment_id: str = "e", pad: int = 0) -> p.TrialResult:
    event = p.TrialResult(
        seq=bus.next_seq(),
        ts=0.0,
        experiment_id=experiment_id,
        trial_id=f"{experiment_id}_00000",
        metrics=p.pack_user({"i": bus.seq, "pad": "x" * pad}),
    )
    bus.publish(event)
    return event


def _seqs(sub: Subscriber) -> list[int]:
    return [seq for seq, _frame in sub.queue]


def test_a_quiet_stream_is_delivered_at_once() -> None:
    async def main() -> None:
        bus = EventBus(history_bytes=1 << 20, subscriber_bytes=1 << 20)
        sub = bus.subscribe("")
        first = _result(bus)
        assert _seqs(sub) == [first.seq] and sub.wakeup.is_set()

    anyio.run(main)


def test_a_busy_stream_goes_to_every_subscriber_in_one_paced_delivery() -> None:
    async def main() -> None:
        bus = EventBus(history_bytes=1 << 20, subscriber_bytes=1 << 20)
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
    bus = EventBus(history_bytes=1 << 20, subscriber_bytes=1 << 20)
    assert bus.delivery_interval() == events.DELIVERY_S
    for _ in range(1000):
        bus.subscribe("")
    assert bus.delivery_interval() == events.MAX_DELIVERY_S


def test_a_full_subscriber_drops_its_buffer_and_reads_the_history_from_where_it_was() -> None:
    bus = EventBus(history_bytes=1 << 20, subscriber_bytes=3_000)
    sub = bus.subscribe("")  # no loop running: each event is delivered as it comes
    published = [_result(bus, pad=900) for _ in range(5)]
    assert sub.lagging and not sub.queue and sub.queued_bytes == 0  # nothing held for it
    piece = bus.history_piece(0, "")
    assert piece is not None and [seq for seq, _ in piece] == [e.seq for e in published]
    assert bus.history_piece(published[-1].seq, "") == []  # read to the end: live again


def test_the_history_is_bounded_by_bytes_not_by_events() -> None:
    bus = EventBus(history_bytes=100_000, subscriber_bytes=1 << 20)
    small = [_result(bus) for _ in range(100)]
    assert bus.history_len == 100  # a hundred small events fit
    big = [_result(bus, pad=30_000) for _ in range(10)]  # 300 KB: three fit
    assert bus.history_bytes <= 100_000
    assert 1 <= bus.history_len <= 3
    assert bus.history_piece(small[-1].seq, "") is None  # forgotten: a resubscriber lags
    kept = bus.history_piece(big[-2].seq, "")
    assert kept is not None and [seq for seq, _ in kept] == [big[-1].seq]
    frame = bytes(kept[0][1])
    assert bus.history_bytes == len(frame) * bus.history_len + ENTRY_OVERHEAD * bus.history_len
    one = EventBus(history_bytes=10, subscriber_bytes=10)
    _result(one)
    last = _result(one, pad=1_000)  # larger than the bound: the latest is kept all the same
    assert one.history_len == 1
    assert [seq for seq, _ in one.history_piece(last.seq - 1, "") or []] == [last.seq]


def test_a_piece_of_history_is_bounded_and_only_the_experiment_asked_for() -> None:
    bus = EventBus(history_bytes=10 << 20, subscriber_bytes=1 << 20)
    for i in range(20_000):
        _result(bus, "f" if i % 1000 == 999 else "e", pad=100)
    piece = bus.history_piece(0, "", limit=50_000)
    assert piece is not None and 200 < len(piece) < 500  # about 50 KB of ~200-byte frames
    assert [seq for seq, _ in piece] == list(range(1, len(piece) + 1))
    only_f = bus.history_piece(0, "f")  # past stretches with none of its events
    assert only_f is not None and [seq for seq, _ in only_f][:2] == [1000, 2000]
