"""The workloads ``bench.packing`` runs, and the figures taken from a run of one.

Pure: no processes, no clock. A mix is a few experiments, each submitted by its own
script at an offset from a common start, whose trials ask for GPUs, CPUs and memory
and sleep for a set time (or report every step until ASHA stops them). What a run
gives back is, per trial, when its code started and when it last reported; the
figures compare that with what no scheduler could beat:

- the lower bound on the makespan: the most work per unit of capacity of any
  resource (GPU-, CPU- or memory-seconds over what the machine has), the longest
  trial, and each experiment's arrival plus its longest trial;
- utilization: the work on the binding resource over its capacity times the
  makespan (the GPUs in GPU-bound mixes);
- starvation: for each big trial (the largest ask of its experiment), how long
  it still waited, once next in line (its experiment's earlier big trials
  started), after the first smaller trial that arrived after it started ahead
  of it, in units of the mix's longest trial (a reservation has to wait
  for at most one trial to drain). A trial of another experiment holding a
  smaller share of the machine at that moment does not count: that is fair
  share, not starvation;
- for mixes of several experiments, the longest any later experiment waited for
  its first trial to start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

GiB = 2**30
# Trials per kind, in multiples of one machine-full: more waves, less tail.
WAVES = 4


@dataclass(frozen=True)
class TrialPlan:
    gpu: float
    cpu: float
    seconds: float  # the whole trial; with steps > 1, split into equal steps
    memory: int = 0
    steps: int = 1


@dataclass(frozen=True)
class ExperimentPlan:
    name: str
    at: float  # seconds after the common start that its script calls fit()
    trials: tuple[TrialPlan, ...]
    asha: bool = False  # ASHAScheduler(max_t=steps, grace_period=1, reduction_factor=3)

    def as_json(self) -> dict[str, object]:
        rows = [[t.gpu, t.cpu, t.memory, t.seconds, t.steps] for t in self.trials]
        return {"name": self.name, "at": self.at, "asha": self.asha, "trials": rows}


@dataclass(frozen=True)
class Mix:
    name: str
    gpus: int
    cpus: int
    memory: int
    experiments: tuple[ExperimentPlan, ...]
    about: str = ""

    def capacity(self) -> dict[str, float]:
        return {"gpu": self.gpus, "cpu": self.cpus, "memory": self.memory}


def _many(
    rng: random.Random, n: int, gpu: float, cpu: float, seconds: float, **kw: int
) -> list[TrialPlan]:
    """``n`` trials asking the same, each lasting ``seconds`` give or take a quarter."""
    return [
        TrialPlan(gpu, cpu, round(seconds * rng.uniform(0.75, 1.25), 3), **kw) for _ in range(n)
    ]


def _shuffled(trials: list[TrialPlan], rng: random.Random) -> tuple[TrialPlan, ...]:
    rng.shuffle(trials)
    return tuple(trials)


def mixes(gpus: int, unit: float) -> list[Mix]:
    """The mixes on ``gpus`` devices (a multiple of 4); ``unit`` seconds scale every trial.

    Trials of a kind last their nominal time give or take a quarter (seeded: the
    same plan every run), as real ones do.
    """
    k = gpus // 4 * WAVES
    plenty = 8 * gpus  # CPUs where the GPUs are meant to bind
    u = unit
    rng = random.Random(gpus)
    fractional = _shuffled(
        _many(rng, 16 * k, 0.25, 1, 3 * u)
        + _many(rng, 8 * k, 0.5, 1, 3 * u)
        + _many(rng, 6 * k, 1, 1, 3 * u)
        + _many(rng, 3 * k, 2, 1, 2 * u),
        rng,
    )
    big = tuple(
        t for i in range(6 * k) for t in _many(rng, 1, 1, 1, 3 * u) + _many(rng, 1, 2, 1, 3 * u)
    )
    small = [tuple(_many(rng, 8 * k, 0.25, 1, u)) for _ in range(3)]
    asha_half = tuple(_many(rng, 36 * k, 0.5, 1, 4.5 * u, steps=9))
    asha_whole = tuple(_many(rng, 18 * k, 1, 1, 4.5 * u, steps=9))
    binding = _shuffled(
        _many(rng, 8 * k, 0.25, 2, 3 * u)
        + _many(rng, 8 * k, 0.5, 1, 3 * u, memory=8 * GiB)
        + _many(rng, 4 * k, 1, 4, 2 * u, memory=16 * GiB),
        rng,
    )
    memory = 64 * GiB * (gpus // 4)
    return [
        Mix(
            "fractional",
            gpus,
            plenty,
            memory,
            (ExperimentPlan("fractional", 0, fractional),),
            "one experiment, shuffled: 0.25-, 0.5-, 1- and 2-GPU trials",
        ),
        Mix(
            "big then small",
            gpus,
            plenty,
            memory,
            (
                ExperimentPlan("big", 0, big),
                *(ExperimentPlan(f"small{j}", (1 + j) * u, small[j]) for j in range(3)),
            ),
            "1- and 2-GPU trials, then three experiments of 0.25-GPU trials from other scripts",
        ),
        Mix(
            "asha",
            gpus,
            plenty,
            memory,
            (
                ExperimentPlan("asha_half", 0, asha_half, asha=True),
                ExperimentPlan("asha_whole", u, asha_whole, asha=True),
            ),
            "two ASHA experiments (0.5 and 1 GPU) whose trials stop at odd moments",
        ),
        Mix(
            "cpu and memory bind",
            gpus,
            2 * gpus,
            32 * GiB * (gpus // 4),
            (ExperimentPlan("binding", 0, binding),),
            "CPU and memory asks that run out before the GPUs do",
        ),
    ]


@dataclass(frozen=True)
class Ran:
    """One trial as it ran: when its code started and when it last reported."""

    experiment: int  # position in the mix
    index: int
    plan: TrialPlan
    start: float  # seconds after the common start
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Outcome:
    makespan: float
    bound: float
    binding: str
    utilization: float
    starvation: float  # in longest-trial units
    first_wait: float | None  # in longest-trial units; None with one experiment
    longest: float
    detail: dict[str, float] = field(default_factory=dict)
    stopped: bool = False  # cut off before it finished: the makespan is a lower bound


def _size(plan: TrialPlan, mix: Mix) -> float:
    """A trial's dominant share of the machine: how big it is, whichever resource."""
    return max(plan.gpu / mix.gpus, plan.cpu / mix.cpus, plan.memory / mix.memory)


def _share(mix: Mix, ran: list[Ran], experiment: int, at: float, leave: Ran) -> float:
    """An experiment's dominant share of the machine at ``at``, ``leave`` not counted."""
    live = [
        t for t in ran if t.experiment == experiment and t.start <= at < t.end and t is not leave
    ]
    gpu = sum(t.plan.gpu for t in live) / mix.gpus
    cpu = sum(t.plan.cpu for t in live) / mix.cpus
    memory = sum(t.plan.memory for t in live) / mix.memory
    return max(gpu, cpu, memory)


def _starved(mix: Mix, ran: list[Ran], order: list[Ran], big: Ran) -> float:
    """How long ``big`` waited, next in line, after a smaller later trial went first.

    Only a big trial counts (the largest ask of its experiment), from the moment
    it is next in line: its experiment's earlier big trials have started.
    """
    size = _size(big.plan, mix)
    siblings = [t for t in ran if t.experiment == big.experiment]
    if size < max(_size(t.plan, mix) for t in siblings):
        return 0.0
    since = max(
        [mix.experiments[big.experiment].at]
        + [t.start for t in siblings if t.index < big.index and _size(t.plan, mix) == size]
    )
    later = order[order.index(big) + 1 :]
    overtakers = [
        t.start
        for t in later
        if since <= t.start < big.start
        and _size(t.plan, mix) < size
        and _share(mix, ran, t.experiment, t.start, t)
        >= _share(mix, ran, big.experiment, t.start, t)
    ]
    return big.start - min(overtakers) if overtakers else 0.0


def planned_bound(mix: Mix) -> float:
    """The lower bound from the plan (each trial its full length, ASHA's too)."""
    cap = mix.capacity()
    trials = [t for exp in mix.experiments for t in exp.trials]
    work = [sum(getattr(t, r) * t.seconds for t in trials) / cap[r] for r in cap]
    arrivals = [exp.at + max(t.seconds for t in exp.trials) for exp in mix.experiments]
    return max(*work, *arrivals)


def outcome(mix: Mix, ran: list[Ran], stopped_at: float | None = None) -> Outcome:
    """The figures of one run of ``mix``: ``ran`` holds every trial, times from the start.

    ``stopped_at``: the run was cut off then, ``ran`` holds what had reported by
    then; the makespan is at least that, measured against the planned bound.
    """
    cap = mix.capacity()
    work = {r: sum(getattr(t.plan, r) * t.seconds for t in ran) / cap[r] for r in cap}
    planned = max(t.seconds for exp in mix.experiments for t in exp.trials)
    longest = max((t.seconds for t in ran), default=planned)
    arrivals = [
        exp.at + max((t.seconds for t in ran if t.experiment == i), default=0.0)
        for i, exp in enumerate(mix.experiments)
    ]
    binding = max(work, key=lambda r: work[r])
    bound = max(*work.values(), longest, *arrivals)
    makespan = max((t.end for t in ran), default=0.0)
    if stopped_at is not None:
        makespan, bound = max(makespan, stopped_at), planned_bound(mix)
    order = sorted(ran, key=lambda t: (mix.experiments[t.experiment].at, t.experiment, t.index))
    worst = 0.0
    for big in order:
        wait = _starved(mix, ran, order, big)
        worst = max(worst, wait)
    first_wait = None
    if len(mix.experiments) > 1:
        first_wait = max(
            min((t.start for t in ran if t.experiment == i), default=makespan) - exp.at
            for i, exp in enumerate(mix.experiments)
            if i > 0
        )
        first_wait /= longest
    return Outcome(
        makespan=makespan,
        bound=bound,
        binding=binding,
        utilization=work[binding] / makespan,
        starvation=worst / longest,
        first_wait=first_wait,
        longest=longest,
        detail=work,
        stopped=stopped_at is not None,
    )
