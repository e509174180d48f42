"""The mixes of ``bench.packing`` through the daemon's own scheduler, on a virtual clock.

Pure and fast (no processes): the real ``Scheduler`` and ``Ledger`` admit trials,
an event queue ends them after their duration, and ``bench.mixes.outcome`` takes
the same figures as a real run does. It shows what a scheduling rule does to a mix
in a second, and the tests use ``simulate`` to check the rules on random mixes.
ASHA's early stops are stood in for by a fixed pattern (two trials in three stop
after the first step, two in nine after the third).

``python -m bench.simulate [--gpus 4,8]``.
"""

from __future__ import annotations

import argparse
import heapq
from pathlib import Path

import msgspec
from tuned_client.protocol import ExperimentSpec

from tuned.core.ledger import Allocation, Capacity, Ledger, parse_request, to_units
from tuned.core.model import Experiment, Trial, transition
from tuned.core.scheduler import Scheduler

from .mixes import Mix, Outcome, Ran, TrialPlan, mixes, outcome


def asha_seconds(plan: TrialPlan, index: int) -> float:
    """How long an ASHA trial runs here: 1 step in 2 of 3 trials, 3 in 2 of 9, else all."""
    if plan.steps == 1:
        return plan.seconds
    steps = 1 if index % 3 else (3 if index % 9 else plan.steps)
    return plan.seconds * steps / plan.steps


def _experiment(mix: Mix, e: int, priority: int = 0) -> Experiment:
    plan = mix.experiments[e]
    spec = ExperimentSpec(
        name=plan.name, storage_path="", trainable_name="t", trainable=b"", python="",
        cwd="", sys_path=[], env={}, trials=[], priority=priority,
    )  # fmt: skip
    exp = Experiment(id=f"e{e}", spec=spec, path=Path(), seq=e)
    for i, t in enumerate(plan.trials):
        bundle = {"cpu": t.cpu, "gpu": t.gpu, "memory": t.memory}
        trial = Trial(
            id=f"e{e}_{i:05d}", index=i, tag="", experiment=exp, config=msgspec.Raw(b"{}"),
            request=parse_request([{k: v for k, v in bundle.items() if v}]), resources=[],
        )  # fmt: skip
        exp.trials.append(trial)
        exp.queue.append(trial)
    return exp


def simulate(mix: Mix, overhead: float = 0.0) -> tuple[Outcome, list[Ran]]:
    """Run ``mix`` on a virtual clock; each start costs ``overhead`` seconds of nothing."""
    capacity = Capacity(
        cpu=to_units(mix.cpus, resource="cpu"),
        memory=mix.memory,
        gpu_ids=tuple(str(i) for i in range(mix.gpus)),
    )
    ledger = Ledger(capacity)
    scheduler = Scheduler(ledger)
    events: list[tuple[float, int, int, Trial | None, Allocation | None]] = []
    for e, plan in enumerate(mix.experiments):  # arrivals
        heapq.heappush(events, (plan.at, 0, e, None, None))
    ran: list[Ran] = []
    tick = 0
    while events:
        now = events[0][0]
        while events and events[0][0] == now:  # everything at this instant, then one pass
            _, _, e, trial, allocation = heapq.heappop(events)
            if trial is None:
                scheduler.add(_experiment(mix, e))
            else:
                assert allocation is not None
                ledger.release(allocation)
                transition(trial, "TERMINATED")
        for started, alloc in scheduler.admit():
            transition(started, "RUNNING")
            exp_index = int(started.experiment.id[1:])
            plan = mix.experiments[exp_index].trials[started.index]
            seconds = asha_seconds(plan, started.index)
            start = now + overhead
            ran.append(Ran(exp_index, started.index, plan, start, start + seconds))
            tick += 1
            heapq.heappush(events, (start + seconds, tick, exp_index, started, alloc))
    assert ledger.is_full and scheduler.queued == 0
    return outcome(mix, ran), ran


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__)
    parser.add_argument("--gpus", default="4,8")
    parser.add_argument("--overhead", type=float, default=0.0, help="seconds per trial start")
    args = parser.parse_args()
    for count in (int(g) for g in args.gpus.split(",")):
        for mix in mixes(count, 1.0):
            o, _ = simulate(mix, args.overhead)
            first = "" if o.first_wait is None else f", first-trial wait {o.first_wait:.2f}"
            print(
                f"{count} GPUs, {mix.name}: makespan {o.makespan:.2f} / bound {o.bound:.2f} = "
                f"{o.makespan / o.bound:.3f}, {o.binding} busy {o.utilization:.1%}, "
                f"starvation {o.starvation:.2f}{first}"
            )


if __name__ == "__main__":
    main()
