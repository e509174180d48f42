"""Admission: which queued trials start now, given the ledger.

Experiments are served first come, first served (higher ``priority`` first),
trials in their experiment's order. When a trial does not fit, the resources it
is short of are reserved for it: no trial behind it may take any of those, so a
4-CPU trial is never starved by a stream of 1-CPU trials queued after it.
Trials behind it that need none of those resources still backfill, which cannot
delay it. ``max_concurrent_trials`` caps each experiment, whoever made its
trials, and a capped experiment reserves nothing.
"""

from __future__ import annotations

from .ledger import Allocation, Ledger, Request
from .model import Experiment, Trial

# How far past a blocked trial we look for ones that can backfill.
LOOKAHEAD = 64


def resource_names(request: Request) -> frozenset[str]:
    names: set[str] = set()
    for b in request.bundles:
        if b.cpu:
            names.add("cpu")
        if b.gpu:
            names.add("gpu")
        if b.memory:
            names.add("memory")
        names.update(k for k, v in b.custom.items() if v)
    return frozenset(names)


class Scheduler:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._experiments: list[Experiment] = []

    def add(self, exp: Experiment) -> None:
        self._experiments.append(exp)
        self._experiments.sort(key=lambda e: (-e.spec.priority, e.seq))

    def remove(self, exp: Experiment) -> None:
        if exp in self._experiments:
            self._experiments.remove(exp)

    @property
    def queued(self) -> int:
        return sum(len(e.queue) for e in self._experiments)

    def admit(self) -> list[tuple[Trial, Allocation]]:
        """Acquire resources for every trial that may start now, in order."""
        started: list[tuple[Trial, Allocation]] = []
        reserved: set[str] = set()
        # Requests (by identity: an experiment's trials share one) found not to fit in
        # this pass. Within a pass the ledger only fills and ``reserved`` only grows,
        # so they cannot fit later in it either: each is tried once per pass, not
        # once per queued trial (50 blocked experiments cost 5 ms a pass otherwise).
        blocked: set[int] = set()
        for exp in self._experiments:
            if exp.cancelled or not exp.queue:
                continue
            self._admit_from(exp, reserved, started, blocked)
        return started

    def _admit_from(
        self,
        exp: Experiment,
        reserved: set[str],
        started: list[tuple[Trial, Allocation]],
        blocked: set[int],
    ) -> None:
        looked = 0
        taken: list[int] = []  # queue positions admitted, removed after the walk
        limit = exp.spec.max_concurrent_trials
        for pos, trial in enumerate(exp.queue):
            if looked > LOOKAHEAD or (limit > 0 and exp.running + len(taken) >= limit):
                break
            request = trial.request
            if id(request) in blocked:
                looked += 1
                continue
            if reserved & resource_names(request):
                blocked.add(id(request))
                looked += 1
                continue
            allocation = self.ledger.acquire(request)
            if allocation is None:
                reserved |= self.ledger.shortfall(request)
                blocked.add(id(request))
                looked += 1
                continue
            taken.append(pos)
            started.append((trial, allocation))
        for pos in reversed(taken):
            del exp.queue[pos]
