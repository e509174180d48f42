"""Fan-out of events to subscribers, each with a bounded buffer.

Each event is encoded once into a frame and shared by every subscriber. A
subscriber whose buffer is full is not waited for: it is marked as lagging and,
once it has drained, catches up from the recent history if the events are still
held there, or is told with ``Lagged`` where it stopped so it can resubscribe.
The daemon's loop never blocks on a subscriber.

Events reach the subscribers' buffers in deliveries: a quiet stream's event is
delivered at once, a busy stream's collect and go to every subscriber together
at most once per interval (longer when many follow). A hundred subscribers then
cost the loop one pass over them per interval, not one per event, and their
connections are all written in the same turn of the loop, so a process that
holds many of them wakes once for all.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterator

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

Pending = list[tuple[int, str, bytes]]  # (seq, experiment id, frame), in seq order


class Subscriber:
    """One subscription's buffer of encoded frames."""

    def __init__(self, experiment_id: str, capacity: int, after: int = 0) -> None:
        self.experiment_id = experiment_id
        self.capacity = capacity
        self.after = after  # the bus's last seq when it subscribed: only later events come
        self.queue: deque[tuple[int, bytes]] = deque()
        # One event, cleared after each wait: an anyio.Event per wait costs more than
        # the wait itself when a hundred subscribers wake at every delivery.
        self.wakeup = asyncio.Event()
        self.lagging = False
        self.closed = False

    def offer(self, seq: int, frame: bytes) -> None:
        self.offer_many([(seq, frame)])

    def offer_many(self, frames: list[tuple[int, bytes]]) -> None:
        """Queue ``frames`` (a delivery); past the capacity, queue what fits and lag."""
        if self.lagging or not frames:
            return
        room = self.capacity - len(self.queue)
        if len(frames) > room:
            self.queue.extend(frames[: max(room, 0)])
            self.lagging = True
        else:
            self.queue.extend(frames)
        self.wakeup.set()

    async def wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup.clear()


class EventBus:
    """Sequence numbers, recent history, and the live subscribers."""

    def __init__(self, history: int, subscriber_buffer: int, first_seq: int = 0) -> None:
        self.seq = first_seq
        self._history: deque[tuple[int, str, bytes]] = deque(maxlen=history)
        self._subscribers: list[Subscriber] = []
        self._buffer = subscriber_buffer
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
        self._history.append((seq, experiment_id, frame))
        if not self._subscribers:
            return
        self._pending.append((seq, experiment_id, frame))
        if self._timer is None:
            self._schedule()

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
        every: list[tuple[int, bytes]] | None = None
        by_experiment: dict[str, list[tuple[int, bytes]]] = {}
        for sub in self._subscribers:
            if sub.after >= pending[0][0]:  # subscribed after some of these were published
                frames = [(s, f) for s, e, f in pending if s > sub.after and _wants(sub, e)]
            elif not sub.experiment_id:
                if every is None:
                    every = [(s, f) for s, _e, f in pending]
                frames = every
            else:
                mine = by_experiment.get(sub.experiment_id)
                if mine is None:
                    mine = [(s, f) for s, e, f in pending if e == sub.experiment_id]
                    by_experiment[sub.experiment_id] = mine
                frames = mine
            sub.offer_many(frames)

    def history_after(self, seq: int, experiment_id: str) -> Iterator[tuple[int, bytes]] | None:
        """Events after ``seq`` still held, or None if some were already dropped."""
        if seq < self.seq and (not self._history or self._history[0][0] > seq + 1):
            return None
        return (
            (s, frame)
            for s, exp, frame in list(self._history)
            if s > seq and (not experiment_id or exp == experiment_id)
        )

    def subscribe(self, experiment_id: str) -> Subscriber:
        sub = Subscriber(experiment_id, self._buffer, after=self.seq)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    @property
    def has_global_subscriber(self) -> bool:
        return any(not s.experiment_id for s in self._subscribers)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


def _wants(sub: Subscriber, experiment_id: str) -> bool:
    return not sub.experiment_id or sub.experiment_id == experiment_id
