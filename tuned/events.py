"""Fan-out of events to subscribers, each with a bounded buffer.

Each event is encoded once into a frame and shared by every subscriber. A
subscriber whose buffer is full is not waited for: it is marked as lagging and,
once it has drained, catches up from the recent history if the events are still
held there, or is told with ``Lagged`` where it stopped so it can resubscribe.
The daemon's loop never blocks on a subscriber.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import anyio
from tuned_client.framing import encode_frame
from tuned_client.protocol import Event


class Subscriber:
    """One subscription's buffer of encoded frames."""

    def __init__(self, experiment_id: str, capacity: int) -> None:
        self.experiment_id = experiment_id
        self.capacity = capacity
        self.queue: deque[tuple[int, bytes]] = deque()
        self.wakeup = anyio.Event()
        self.lagging = False
        self.closed = False

    def offer(self, seq: int, frame: bytes) -> None:
        if self.lagging:
            return
        if len(self.queue) >= self.capacity:
            self.lagging = True
        else:
            self.queue.append((seq, frame))
        self.wakeup.set()

    async def wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup = anyio.Event()


class EventBus:
    """Sequence numbers, recent history, and the live subscribers."""

    def __init__(self, history: int, subscriber_buffer: int, first_seq: int = 0) -> None:
        self.seq = first_seq
        self._history: deque[tuple[int, str, bytes]] = deque(maxlen=history)
        self._subscribers: list[Subscriber] = []
        self._buffer = subscriber_buffer

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def publish(self, event: Event) -> None:
        frame = encode_frame(event)
        self._history.append((event.seq, event.experiment_id, frame))
        for sub in self._subscribers:
            if not sub.experiment_id or sub.experiment_id == event.experiment_id:
                sub.offer(event.seq, frame)

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
        sub = Subscriber(experiment_id, self._buffer)
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
