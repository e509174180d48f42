"""Per-result decisions: a trial waits after a report until its client has decided.

Ray Tune's rule: a trial does not run past a result until the scheduler, the
searcher and the stop rules have decided on it. They live in the client, so
an experiment whose client decides (``ExperimentSpec.decide_results``) has
its trials report with ``wait=True``; the daemon holds the ack of such a
report and marks its ``TrialResult`` event ``decide``, and the client's
``Decide`` releases it (go on, or stop).

The connections that drive an experiment are its *deciders*: the one that
submitted it (if its searcher, scheduler or stopper runs in the client:
``Experiment.needs_driver``), and any that subscribed with ``decide=True`` (a
script that reconnected). When the last one closes, the script may be gone
or on its way back: the experiment is *orphaned* for a grace period, during
which reports are still held, and a decider that subscribes again takes over
(``add_decider``; the held reports it will never see as events, ``seen``, go
on at once). If none does, the daemon interrupts the experiment
(``tuned.daemon.drivers``) and ``abandon`` hands it the held reports, which
are released with "stop".

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
        self._orphans: dict[str, int] = {}  # experiment id -> its wait for a driver (a number)
        self._waits = 0

    def add_decider(self, experiment_id: str, conn: object) -> None:
        self._deciders.setdefault(experiment_id, set()).add(id(conn))
        self._decides.setdefault(id(conn), set()).add(experiment_id)
        self._orphans.pop(experiment_id, None)  # a driver is back: the wait is over

    def deciding(self, experiment_id: str) -> bool:
        """Whether reports wait on a decision: a decider is connected, or may come back."""
        return bool(self._deciders.get(experiment_id)) or experiment_id in self._orphans

    def seen(self, experiment_id: str, since: int) -> list[Held]:
        """Held reports whose events a decider subscribing after ``since`` is not sent, taken.

        It saw them before it reconnected (and its decision was lost with its
        connection), or it resynchronised past them: they go on.
        """
        taken = [
            h
            for h in self._held.values()
            if h.experiment_id == experiment_id and (since < 0 or h.event_seq <= since)
        ]
        for held in taken:
            del self._held[held.trial_id]
        return taken

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

    def decider_gone(self, conn: object) -> list[str]:
        """A connection ended; the experiments it leaves without a decider."""
        left: list[str] = []
        for experiment_id in self._decides.pop(id(conn), ()):
            deciders = self._deciders.get(experiment_id, set())
            deciders.discard(id(conn))
            if not deciders:
                self._deciders.pop(experiment_id, None)
                left.append(experiment_id)
        return left

    def orphan(self, experiment_id: str) -> int:
        """The experiment waits for a driver to come back; returns the wait's number."""
        self._waits += 1
        self._orphans[experiment_id] = self._waits
        return self._waits

    def orphaned(self, experiment_id: str, wait: int) -> bool:
        """Whether the experiment is still in that wait (no driver came back since)."""
        return self._orphans.get(experiment_id) == wait

    def abandon(self, experiment_id: str) -> list[Held]:
        """No driver came back: the wait ends, and the experiment's held reports are taken."""
        self._orphans.pop(experiment_id, None)
        return self.seen(experiment_id, -1)
