"""Fan-out of events to subscribers, each with a bounded buffer; a history bounded by bytes.

Each event is encoded once into a frame, kept in the recent history and shared
by every subscriber. Both bounds count bytes, not events: one trial reporting
rows of 54 KB must not make the history hold gigabytes, nor a subscriber that
does not read.

A subscriber is either live (its buffer gets each delivery) or behind: it
subscribed from an earlier event, or its buffer overflowed. A subscriber that
is behind holds nothing of its own: its buffer is dropped and it reads the
history from the last event it sent, a piece at a time (``history_piece``), so
a stuck one costs at most the piece it is blocked on. Once it has read to the
end it is live again; if the history no longer holds where it stopped, it is
told with ``Lagged`` and resyncs. The daemon's loop never blocks on a subscriber.

Events reach the subscribers' buffers in deliveries: a quiet stream's event is
delivered at once, a busy stream's collect and go to every subscriber together
at most once per interval (longer when many follow). A hundred subscribers then
cost the loop one pass over them per interval, not one per event, and their
connections are all written in the same turn of the loop, so a process that
holds many of them wakes once for all.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import operator
import time
from collections import deque

from tuned_client.framing import HEADER, encode_frame
from tuned_client.protocol import Event

# How often events may be delivered: every 10 ms to a few subscribers, and 1 ms
# more per subscriber, up to every 100 ms when a hundred or more follow. Each
# delivery costs the loop a wake-up and a write per subscriber (some 30 µs here,
# and a wake-up of the process that reads), so a Tuner following 1,000 results/s
# costs at most 100 writes a second, and all subscribers together about 1,000
# until there are more than a hundred of them.
DELIVERY_S = 0.01
DELIVERY_PER_SUBSCRIBER_S = 0.001
MAX_DELIVERY_S = 0.1

# What an event costs the history besides its frame: the tuple, the bytes
# object's head, the list's slot. Counted so that a history of tiny events is
# bounded by the memory it takes, not by its frames' bytes alone.
ENTRY_OVERHEAD = 120
PIECE_BYTES = 1 << 20  # what one write to a subscriber catching up carries at most

Pending = list[tuple[int, str, bytes]]  # (seq, experiment id, frame), in seq order
_seq_of = operator.itemgetter(0)


class Subscriber:
    """One subscription: its buffer of frames while live, its place while behind."""

    def __init__(self, experiment_id: str, capacity: int, after: int = 0) -> None:
        self.experiment_id = experiment_id
        self.capacity = capacity  # bytes the buffer may hold
        self.after = after  # the bus's last seq when it subscribed: only later events come
        self.queue: deque[tuple[int, bytes]] = deque()
        self.queued_bytes = 0
        self.sending = 0  # bytes of the write under way (held until it completes)
        # One event, cleared after each wait: an anyio.Event per wait costs more than
        # the wait itself when a hundred subscribers wake at every delivery.
        self.wakeup = asyncio.Event()
        self.lagging = False  # behind: reads the history, its buffer takes nothing
        self.closed = False

    def offer(self, seq: int, frame: bytes) -> None:
        self.offer_many([(seq, frame)], len(frame))

    def offer_many(self, frames: list[tuple[int, bytes]], size: int) -> None:
        """Queue ``frames`` (a delivery of ``size`` bytes); past the capacity, fall behind."""
        if self.lagging or not frames:
            return
        if self.queued_bytes + size > self.capacity:
            self.fall_behind()
        else:
            self.queue.extend(frames)
            self.queued_bytes += size
        self.wakeup.set()

    def fall_behind(self) -> None:
        """Drop the buffer: what it held is read again from the history."""
        self.lagging = True
        self.queue.clear()
        self.queued_bytes = 0

    def take(self) -> list[tuple[int, bytes]]:
        """Everything buffered, emptying the buffer."""
        batch = list(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return batch

    async def wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup.clear()


class EventBus:
    """Sequence numbers, recent history (bounded by bytes), and the live subscribers."""

    def __init__(self, history_bytes: int, subscriber_bytes: int, first_seq: int = 0) -> None:
        self.seq = first_seq
        self.history_limit = history_bytes
        self.history_bytes = 0
        # In seq order from ``_start``: a list, so a seq is found by bisection.
        self._history: list[tuple[int, str, bytes]] = []
        self._start = 0
        self._subscribers: list[Subscriber] = []
        self._buffer = subscriber_bytes
        self._pending: Pending = []  # published, not yet delivered
        self._delivered_at = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def publish(self, event: Event) -> None:
        self._publish_frame(event.seq, event.experiment_id, encode_frame(event))

    def publish_encoded(self, event: Event, body: bytes) -> None:
        """Publish ``event`` given its msgpack ``body`` (the journal's record holds the same)."""
        self._publish_frame(event.seq, event.experiment_id, HEADER.pack(len(body)) + body)

    def _publish_frame(self, seq: int, experiment_id: str, frame: bytes) -> None:
        self._remember(seq, experiment_id, frame)
        if not self._subscribers:
            return
        self._pending.append((seq, experiment_id, frame))
        if self._timer is None:
            self._schedule()

    def _remember(self, seq: int, experiment_id: str, frame: bytes) -> None:
        """Keep the event in the history, forgetting the oldest past its bytes."""
        history = self._history
        history.append((seq, experiment_id, frame))
        self.history_bytes += len(frame) + ENTRY_OVERHEAD
        start = self._start
        while self.history_bytes > self.history_limit and start < len(history) - 1:
            self.history_bytes -= len(history[start][2]) + ENTRY_OVERHEAD
            start += 1
        if start > 1024 and start * 2 > len(history):  # the forgotten slots go in one move
            del history[:start]
            start = 0
        self._start = start

    def delivery_interval(self) -> float:
        """The least time between deliveries: longer the more subscribers there are."""
        interval = max(DELIVERY_S, DELIVERY_PER_SUBSCRIBER_S * len(self._subscribers))
        return min(interval, MAX_DELIVERY_S)

    def _schedule(self) -> None:
        """Deliver now if the last delivery was long enough ago, else once it will be."""
        delay = self._delivered_at + self.delivery_interval() - time.monotonic()
        if delay <= 0:
            self.deliver()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test, a replay): nothing to wait with
            self.deliver()
            return
        self._timer = loop.call_later(delay, self.deliver)

    def deliver(self) -> None:
        """Hand every subscriber the events published since the last delivery."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._delivered_at = time.monotonic()
        pending, self._pending = self._pending, []
        if not pending:
            return
        every: tuple[list[tuple[int, bytes]], int] | None = None
        by_experiment: dict[str, tuple[list[tuple[int, bytes]], int]] = {}
        for sub in self._subscribers:
            if sub.lagging:
                continue  # it reads the history
            if sub.after >= pending[0][0]:  # subscribed after some of these were published
                frames = [(s, f) for s, e, f in pending if s > sub.after and _wants(sub, e)]
                sub.offer_many(frames, sum(len(f) for _, f in frames))
                continue
            if not sub.experiment_id:
                if every is None:
                    every = _sized([(s, f) for s, _e, f in pending])
                chosen = every
            else:
                mine = by_experiment.get(sub.experiment_id)
                if mine is None:
                    mine = _sized([(s, f) for s, e, f in pending if e == sub.experiment_id])
                    by_experiment[sub.experiment_id] = mine
                chosen = mine
            sub.offer_many(*chosen)

    def history_piece(
        self, seq: int, experiment_id: str, limit: int = PIECE_BYTES
    ) -> list[tuple[int, bytes]] | None:
        """The next events after ``seq`` still held, up to about ``limit`` bytes.

        None if some after ``seq`` were already forgotten; [] once there are
        none left. At least one event when there is one, however large.
        """
        history, start = self._history, self._start
        if seq < self.seq and (start == len(history) or history[start][0] > seq + 1):
            return None
        at = bisect.bisect_right(history, seq, lo=start, key=_seq_of)
        piece: list[tuple[int, bytes]] = []
        size = 0
        while at < len(history) and not piece:  # a bounded walk per stretch
            for s, exp, frame in history[at : at + 4096]:
                if experiment_id and exp != experiment_id:
                    continue
                piece.append((s, frame))
                size += len(frame)
                if size >= limit:
                    break
            at += 4096
        return piece

    @property
    def history_len(self) -> int:
        return len(self._history) - self._start

    def subscribe(self, experiment_id: str, since: int = -1) -> Subscriber:
        """A subscriber from now (``since`` -1) or reading the history after ``since``."""
        sub = Subscriber(experiment_id, self._buffer, after=self.seq)
        sub.lagging = since >= 0
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    @property
    def held_bytes(self) -> int:
        """What events hold now: the history, the subscribers' buffers and writes."""
        return self.history_bytes + sum(s.queued_bytes + s.sending for s in self._subscribers)

    @property
    def has_global_subscriber(self) -> bool:
        return any(not s.experiment_id for s in self._subscribers)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


def _wants(sub: Subscriber, experiment_id: str) -> bool:
    return not sub.experiment_id or sub.experiment_id == experiment_id


def _sized(frames: list[tuple[int, bytes]]) -> tuple[list[tuple[int, bytes]], int]:
    return frames, sum(len(f) for _, f in frames)
