"""Per-result decisions: a trial waits after a report until its client has decided.

Ray Tune's rule: a trial does not run past a result until the scheduler, the
searcher and the stop rules have decided on it. They live in the client, so
an experiment whose client decides (``ExperimentSpec.decide_results``) has
its trials report with ``wait=True``; the daemon holds the ack of such a
report and marks its ``TrialResult`` event ``decide``, and the client's
``Decide`` releases it (go on, or stop).

Nothing waits on a client that is gone. The connection that submitted the
experiment, or that subscribed to it with ``decide=True`` (a client that
reconnected), is a *decider*. A report is held only while the experiment has
one; when the last decider's connection closes, every held report is
released with "go on", and later reports are acked at once (pipelined, as a
plain sweep), until a decider subscribes again. Trials then run to their own
end; what happens to the experiment after its script died is the daemon's
general rule for that, not this module's.

Pure bookkeeping: the server sends the acks this returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Held:
    """A report whose ack waits for a decision."""

    trial_id: str
    experiment_id: str
    worker: Any  # the trial's connection: the ack goes there
    report_seq: int  # the trial's own sequence number of the report
    event_seq: int  # the TrialResult event the client decides on
    checkpoint: bool = False  # the report carries one: synced before the trial goes on


class Decisions:
    def __init__(self) -> None:
        self._deciders: dict[str, set[int]] = {}  # experiment id -> ids of deciding connections
        self._decides: dict[int, set[str]] = {}  # connection id -> experiments it decides
        self._held: dict[str, Held] = {}  # trial id -> its held report

    def add_decider(self, experiment_id: str, conn: object) -> None:
        self._deciders.setdefault(experiment_id, set()).add(id(conn))
        self._decides.setdefault(id(conn), set()).add(experiment_id)

    def deciding(self, experiment_id: str) -> bool:
        return bool(self._deciders.get(experiment_id))

    def hold(self, held: Held) -> None:
        self._held[held.trial_id] = held

    def take(self, trial_id: str, event_seq: int | None = None) -> Held | None:
        """The held report of ``trial_id`` (for the event ``event_seq`` if given), released."""
        held = self._held.get(trial_id)
        if held is None or (event_seq is not None and held.event_seq != event_seq):
            return None
        del self._held[trial_id]
        return held

    def worker_gone(self, trial_id: str, worker: object) -> None:
        """The trial's connection ended: nothing of it is held any more."""
        held = self._held.get(trial_id)
        if held is not None and held.worker is worker:
            del self._held[trial_id]

    def decider_gone(self, conn: object) -> list[Held]:
        """A connection ended; the held reports to release (their experiment has no decider)."""
        released: list[Held] = []
        for experiment_id in self._decides.pop(id(conn), ()):
            deciders = self._deciders.get(experiment_id, set())
            deciders.discard(id(conn))
            if deciders:
                continue
            self._deciders.pop(experiment_id, None)
            released += [h for h in self._held.values() if h.experiment_id == experiment_id]
        for held in released:
            del self._held[held.trial_id]
        return released
