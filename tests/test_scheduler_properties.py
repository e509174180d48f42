"""Random mixes through the scheduler on a virtual clock: what must hold for any of them.

- Nothing is over-committed, and the ledger is full again at the end.
- Nothing waits forever: every trial of every experiment starts (holds never wait
  for each other in a circle, and none outlives its trial).
- Backfill never delays a holder: in one experiment, a trial that holds starts at
  the latest when every trial that ran when it began to hold has ended.
- ``max_concurrent_trials`` is never exceeded.
"""

from __future__ import annotations

import heapq

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scheduler import GiB, Machine

from tuned.core.ledger import SCALE, ImpossibleRequest

asks = st.fixed_dictionaries(
    {
        "cpu": st.sampled_from([0.5, 1, 2, 4]),
        "gpu": st.sampled_from([0, 0.25, 0.5, 1, 2]),
        "memory": st.sampled_from([0, 4 * GiB, 8 * GiB]),
    }
).map(lambda a: {k: v for k, v in a.items() if v})
trials = st.tuples(asks, st.integers(1, 5))  # (ask, duration)
experiments = st.tuples(
    st.integers(0, 6),  # arrival
    st.sampled_from([0, 0, 1]),  # priority
    st.sampled_from([0, 0, 2]),  # max_concurrent_trials
    st.lists(trials, min_size=1, max_size=12),
)


def simulate(plan: list[tuple[int, int, int, list[tuple[dict[str, float], int]]]]) -> Machine:
    """Run ``plan`` to the end; assert the invariants as it goes."""
    m = Machine(cpu=8, gpus=4, memory=32 * GiB)
    events: list[tuple[int, int, str, int]] = []  # (time, order, kind, index)
    for i, (at, *_) in enumerate(plan):
        heapq.heappush(events, (at, 0, "arrive", i))
    durations: dict[str, int] = {}
    exps = []
    first_hold: dict[str, tuple[int, set[str]]] = {}  # trial -> (when, trials running then)
    started_at: dict[str, int] = {}
    ends: dict[str, int] = {}
    order = 0
    while events:
        now = events[0][0]
        assert now < 10_000, "the mix never finished"
        while events and events[0][0] == now:
            _, _, kind, i = heapq.heappop(events)
            if kind == "arrive":
                _, priority, limit, ts = plan[i]
                exp = m.submit(*(a for a, _ in ts), priority=priority, limit=limit, name=f"x{i}")
                exps.append(exp)
                for t, (_, seconds) in zip(exp.trials, ts, strict=True):
                    assert t is not None
                    durations[t.id] = seconds
            else:
                m.end(f"x{i // 1000}_{i % 1000}")
        for trial_id in m.admit():
            started_at[trial_id] = now
            ends[trial_id] = now + durations[trial_id]
            exp_index, index = (int(x) for x in trial_id[1:].split("_"))
            order += 1
            heapq.heappush(events, (ends[trial_id], order, "end", exp_index * 1000 + index))
        for trial_id in m.scheduler.holds():
            first_hold.setdefault(trial_id, (now, set(m.running)))
        snap = m.ledger.snapshot()
        assert snap.cpu_used <= snap.cpu_total and snap.memory_used <= snap.memory_total
        assert all(0 <= used <= SCALE for used in snap.gpu_used)
        for exp in exps:
            limit = exp.spec.max_concurrent_trials
            assert not limit or exp.running <= limit
    assert m.ledger.is_full and not m.running
    assert all(exp.finished == len(exp.trials) for exp in exps)
    if len(plan) == 1:
        for trial_id, (_, running) in first_hold.items():
            assert started_at[trial_id] <= max(ends[r] for r in running), trial_id
    return m


def possible(plan: list[tuple[int, int, int, list[tuple[dict[str, float], int]]]]) -> bool:
    """Whether every ask could run on the empty machine (the daemon refuses others at submit)."""
    m = Machine(cpu=8, gpus=4, memory=32 * GiB)
    try:
        for _, _, _, ts in plan:
            m.submit(*(a for a, _ in ts))
        for exp in m.scheduler._experiments:
            for t in exp.queue:
                m.ledger.check(t.request)
    except ImpossibleRequest:
        return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(experiments, min_size=1, max_size=4))
def test_random_mixes_finish_without_over_committing(
    plan: list[tuple[int, int, int, list[tuple[dict[str, float], int]]]],
) -> None:
    if possible(plan):
        simulate(plan)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(trials, min_size=8, max_size=30))
def test_in_one_experiment_a_holder_is_never_delayed_by_backfill(
    ts: list[tuple[dict[str, float], int]],
) -> None:
    plan = [(0, 0, 0, ts)]
    if possible(plan):
        simulate(plan)
