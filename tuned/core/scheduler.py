"""Admission: which queued trials start now, given the ledger.

The rules, each a line of the README's "Resources and GPUs":

1. Priority: experiments with a higher ``priority`` are served first and may
   take capacity held for lower ones.
2. Fair share among experiments of equal priority: the next trial comes from
   the experiment holding the smallest share of the machine (its largest
   fraction of any resource: dominant resource fairness), ties to the earlier
   experiment. A second script's experiment starts as soon as anything frees,
   not when the first one's queue runs dry.
3. Largest first within an experiment: of its next queued trials, the biggest
   kind that fits starts first; among equally big kinds, the one that best uses
   what is free; queue order within a kind (``tuned.candidates``).
4. Holds instead of starvation: a trial that does not fit gets a *hold*, its
   amounts set aside and, for GPUs, room on devices of its own (a whole device
   per whole GPU: entirely free ones first, else the least used, which drain
   soonest). Trials that fit beside the hold start now (backfill); they cannot
   delay the holder, which starts once what ran on its devices has ended. A
   holder keeps its devices from pass to pass, swapping one only for an
   entirely free one. Of what it is not short of, it holds only what the
   trials it waits for will not give back (``Ledger.hold_for``). Only
   experiments holding less of the machine than the holder's experiment may
   use held capacity: that is fair share, not starvation.

Holders are ranked (priority, then the biggest, then the oldest) and respect
only the holds ranked before them, so holds never wait for each other in a
circle. An experiment holds for one trial at a time, or, while other
experiments wait and it has less than its fair share (1/n of the machine), for
as many as that share covers, so that whole devices drain for it in parallel.
At most ``MAX_HOLDS`` trials hold at once: more would idle the machine for
trials that cannot start soon anyway. ``max_concurrent_trials`` caps each
experiment, and a capped experiment holds nothing.

Cost: a pass tries each distinct request once however many experiments ask
for it, skips an experiment whose kinds all failed without looking at its
queue, and ends as soon as nothing fits beside the holds the next experiment
would respect (a full machine with 1,000 experiments queued: 0.4 ms a pass,
``bench.admission_cost``). When every trial anywhere asks the same, nobody holds:
none could overtake another.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from .candidates import Candidates, Catalog, Key, remove_taken
from .ledger import NO_HOLD, SCALE, Allocation, Hold, Ledger, Request
from .model import Experiment, Trial

MAX_HOLDS = 4  # trials holding capacity at once


@dataclass(slots=True, eq=False)
class _Holder:
    exp: Experiment
    trial: Trial
    hold: Hold
    size: float
    rank: int = 0  # holders respect only the holds of those ranked before them


@dataclass(slots=True)
class _Pass:
    """The state of one admission pass."""

    ledger: Ledger
    started: list[tuple[Trial, Allocation]] = field(default_factory=list)
    admitted: dict[Experiment, int] = field(default_factory=dict)  # started, per experiment
    # (request, holders respected) found not to fit in this pass. Within a pass the
    # ledger only fills and a hold only grows, so neither can fit later in it: each
    # is tried once a pass, however many experiments ask for the same thing.
    blocked: set[tuple[Key, tuple[int, ...]]] = field(default_factory=set)
    shares: dict[Experiment, float] = field(default_factory=dict)
    sums: dict[tuple[int, ...], Hold] = field(default_factory=dict)  # holds added up

    def share(self, exp: Experiment) -> float:
        share = self.shares.get(exp)
        if share is None:
            share = self.shares[exp] = self.ledger.share(exp.id)
        return share

    def started_one(self, exp: Experiment, trial: Trial, allocation: Allocation) -> None:
        self.started.append((trial, allocation))
        self.admitted[exp] = self.admitted.get(exp, 0) + 1
        self.shares.pop(exp, None)

    def capped(self, exp: Experiment) -> bool:
        """At its ``max_concurrent_trials``, counting what this pass started."""
        limit = exp.spec.max_concurrent_trials
        return limit > 0 and exp.running + self.admitted.get(exp, 0) >= limit


class Scheduler:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._experiments: list[Experiment] = []  # by priority, then first come
        self._by_id: dict[str, Experiment] = {}
        self._open: set[Experiment] = set()  # may still gain trials
        self._holders: dict[Trial, _Holder] = {}  # insertion order: oldest first
        self._catalog = Catalog(self._size)

    def add(self, exp: Experiment) -> None:
        bisect.insort(self._experiments, exp, key=lambda e: (-e.spec.priority, e.seq))
        self._by_id[exp.id] = exp
        self._catalog.add(exp)
        if not exp.closed:
            self._open.add(exp)

    def remove(self, exp: Experiment) -> None:
        if self._by_id.pop(exp.id, None) is exp:
            self._experiments.remove(exp)
        self._open.discard(exp)
        self._catalog.forget(exp)
        for trial in [t for t, h in self._holders.items() if h.exp is exp]:
            del self._holders[trial]

    def open_experiments(self) -> list[Experiment]:
        """Those that may still gain trials: open-ended ones, grids still making theirs."""
        return list(self._open)

    @property
    def queued(self) -> int:
        return sum(len(e.queue) for e in self._experiments)

    def holds(self) -> dict[str, Hold]:
        """Trial id -> what is held for it now."""
        return {h.trial.id: h.hold for h in self._holders.values()}

    def admit(self) -> list[tuple[Trial, Allocation]]:
        """Acquire resources for every trial that may start now."""
        state = _Pass(self.ledger)
        for exp in list(self._open):
            self._catalog.refresh(exp)
            if exp.closed:
                self._open.discard(exp)
        self._renew_holds()
        running = [self._by_id[o] for o in self.ledger.owners() if o in self._by_id]
        for priority, level in itertools.groupby(self._experiments, key=lambda e: e.spec.priority):
            busy = [e for e in running if e.spec.priority == priority]
            self._serve(priority, level, busy, state)
        return state.started

    # ------------------------------------------------------------ holds

    def _renew_holds(self) -> None:
        """Drop holders that left the queue; place every other's hold, in rank order."""
        if self._holders:
            for trial, holder in list(self._holders.items()):
                exp = holder.exp
                if exp.cancelled or trial.status != "PENDING" or exp.at_concurrency_limit:
                    del self._holders[trial]
            order = sorted(self._holders.values(), key=lambda h: (-h.exp.spec.priority, -h.size))
            taken = NO_HOLD
            for rank, holder in enumerate(order):  # stable sort: the oldest first among equals
                holder.hold = self.ledger.hold_for(holder.trial.request, taken, holder.hold.gpus)
                holder.rank = rank
                taken = taken + holder.hold

    def _respected(
        self, exp: Experiment, state: _Pass, skip: _Holder | None = None
    ) -> tuple[Hold, tuple[int, ...]]:
        """The holds a trial of ``exp`` must leave alone, and whose they are.

        Those of higher priority, and of equal priority whose experiment holds no
        more of the machine than ``exp`` does (its own holders' included). A
        holder (``skip``) respects only holders ranked before it.
        """
        if not self._holders:
            return NO_HOLD, ()
        share = state.share(exp)
        mine = [
            h
            for h in self._holders.values()
            if h is not skip
            and (skip is None or h.rank < skip.rank)
            and (
                h.exp.spec.priority > exp.spec.priority
                or (h.exp.spec.priority == exp.spec.priority and state.share(h.exp) <= share)
            )
        ]
        whose = tuple(id(h) for h in mine)
        held = state.sums.get(whose)
        if held is None:
            held = NO_HOLD
            for holder in mine:
                held = held + holder.hold
            state.sums[whose] = held
        return held, whose

    def _hold(self, exp: Experiment, trial: Trial, state: _Pass) -> None:
        if len(self._holders) >= MAX_HOLDS or trial in self._holders:
            return
        if self._catalog.kind_count() < 2:
            return  # every trial anywhere asks the same: none can overtake another
        mine = [h for h in self._holders.values() if h.exp is exp]
        if mine:  # more than one only while others wait and it is below its fair share
            waiting = sum(1 for e in self._experiments if e.queue and not e.cancelled)
            if waiting < 2 or state.share(exp) + sum(h.size for h in mine) >= 1 / waiting:
                return
        taken = NO_HOLD
        for holder in self._holders.values():
            taken = taken + holder.hold
        hold = self.ledger.hold_for(trial.request, taken)
        rank = len(self._holders) + 1_000_000  # after every holder ranked this pass
        self._holders[trial] = _Holder(exp, trial, hold, self._size(trial.request), rank)
        state.sums.clear()

    # ------------------------------------------------------------ fair share

    def _serve(
        self, priority: int, level: Iterable[Experiment], busy: list[Experiment], state: _Pass
    ) -> None:
        """One trial at a time from the experiment with the smallest share, until none fits.

        Experiments holding nothing come first, in arrival order, straight from
        the sorted list; those holding something wait in a heap by share. Once
        nothing fits beside the holds the next experiment would respect, no later
        one (it holds more, so it respects at least as much) can start anything:
        the pass ends there but for experiments with holders of their own.
        """
        heap = [(state.share(e), e.seq, e) for e in busy]
        heapq.heapify(heap)
        idle = (e for e in level if e.queue and not e.cancelled and not state.share(e))
        taking: dict[Experiment, Candidates] = {}
        while True:
            exp = next(idle, None)
            if exp is None:
                if not heap:
                    break
                exp = heapq.heappop(heap)[2]
            if state.capped(exp) or not exp.queue or exp.cancelled:
                continue
            cands = taking.get(exp)
            if cands is None:
                if self._blocked(exp, state):
                    if self._nothing_fits(exp, state):
                        break
                    continue
                cands = taking[exp] = self._catalog.candidates(exp)
            if self._admit_one(exp, cands, state):
                if not state.capped(exp):
                    heapq.heappush(heap, (state.share(exp), exp.seq, exp))
            elif self._nothing_fits(exp, state):
                break
        for exp in self._owners_of_holds(priority, state):  # they may use what others respect
            cands = taking.get(exp) or taking.setdefault(exp, self._catalog.candidates(exp))
            while not state.capped(exp) and self._admit_one(exp, cands, state):
                pass
        for cands in taking.values():
            if cands.taken:
                remove_taken(cands.exp, cands.taken)

    def _owners_of_holds(self, priority: int, state: _Pass) -> list[Experiment]:
        """Experiments of this priority with holders, by share (the loop may have cut them)."""
        exps = {
            h.exp
            for h in self._holders.values()
            if h.exp.spec.priority == priority and h.exp.queue and not h.exp.cancelled
        }
        return sorted(exps, key=lambda e: (state.share(e), e.seq))

    def _blocked(self, exp: Experiment, state: _Pass) -> bool:
        """Whether every kind ``exp`` has already failed in this pass (its holders aside)."""
        if any(h.exp is exp for h in self._holders.values()):
            return False
        _, whose = self._respected(exp, state)
        return all((key, whose) in state.blocked for key in self._catalog.keys(exp))

    def _nothing_fits(self, exp: Experiment, state: _Pass) -> bool:
        """Whether no kind of any experiment fits beside the holds ``exp`` respects.

        Every experiment after ``exp`` in this level holds at least as much of the
        machine, so it respects at least those holds: none of them can start
        anything either, but with its own holders (``_owners_of_holds``).
        """
        held, whose = self._respected(exp, state)
        for request in self._catalog.all_kinds():
            key = (request.key, whose)
            if key not in state.blocked:
                if not self.ledger.shortfall(request, held):
                    return False
                state.blocked.add(key)
        return True

    def _admit_one(self, exp: Experiment, cands: Candidates, state: _Pass) -> bool:
        """Start ``exp``'s holder if it fits, else its biggest next trial that fits."""
        for holder in [h for h in self._holders.values() if h.exp is exp]:
            held, _ = self._respected(exp, state, skip=holder)
            allocation = self.ledger.acquire(holder.trial.request, exp.id, held)
            if allocation is not None:
                del self._holders[holder.trial]
                state.sums.clear()
                cands.taken.add(holder.trial)
                state.started_one(exp, holder.trial, allocation)
                return True
        while not state.capped(exp):
            held, whose = self._respected(exp, state)
            kind = cands.best(functools.partial(self._fit, held=held))
            if kind is None:
                return False
            trial = kind.first()
            assert trial is not None
            if trial in cands.taken or trial in self._holders:
                kind.skip()
                continue
            key = (kind.request.key, whose)
            allocation = None
            if key not in state.blocked:
                allocation = self.ledger.acquire(kind.request, exp.id, held)
            if allocation is None:
                state.blocked.add(key)
                self._hold(exp, trial, state)
                kind.drop()
                continue
            kind.skip()
            cands.taken.add(trial)
            state.started_one(exp, trial, allocation)
            return True
        return False

    def _fit(self, request: Request, held: Hold) -> float:
        """How well a request uses what is free beside ``held`` (Tetris' alignment score)."""
        ledger, cap = self.ledger, self.ledger.capacity
        score = 0.0
        if request.total_cpu and cap.cpu:
            score += request.total_cpu * max(0, ledger.free_cpu() - held.cpu) / cap.cpu**2
        if request.total_memory and cap.memory:
            free = max(0, ledger.free_memory() - held.memory)
            score += request.total_memory * free / cap.memory**2
        if request.total_gpu and cap.gpu_ids:
            devices = range(len(cap.gpu_ids))
            free = sum(max(0, ledger.gpu_free(i) - held.gpus.get(i, 0)) for i in devices)
            score += request.total_gpu * free / (len(cap.gpu_ids) * SCALE) ** 2
        return score

    def _size(self, request: Request) -> float:
        """A request's dominant share of the machine: how big it is, whichever resource."""
        cap = self.ledger.capacity
        return max(
            request.total_cpu / cap.cpu if cap.cpu else 0.0,
            request.total_gpu / (len(cap.gpu_ids) * SCALE) if cap.gpu_ids else 0.0,
            request.total_memory / cap.memory if cap.memory else 0.0,
        )
