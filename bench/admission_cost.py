"""What one admission pass costs the daemon with many experiments queued.

Pure and in-process: the daemon's own ``Scheduler`` and ``Ledger`` on a full
machine (4 CPUs, 4 GPUs) with N experiments queued behind it, each with 100
trials (half ask for a CPU, half for a GPU as well, so no one request blocks
them all). A pass runs after every trial ends; the figure is the median time of
a pass that starts one trial (one trial ended) with N experiments waiting.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import msgspec
from tuned_client.protocol import ExperimentSpec

from tuned.core.ledger import Capacity, Ledger, parse_request, to_units
from tuned.core.model import Experiment, Trial, transition
from tuned.core.scheduler import Scheduler

from .figures import Figure


def _machine(experiments: int) -> tuple[Scheduler, Ledger, list[tuple[Trial, object]]]:
    ledger = Ledger(Capacity(cpu=to_units(4, resource="cpu"), memory=2**36, gpu_ids=tuple("0123")))
    scheduler = Scheduler(ledger)
    cpu, gpu = parse_request([{"cpu": 1}]), parse_request([{"cpu": 0.25, "gpu": 1}])
    for e in range(experiments):
        spec = ExperimentSpec(
            name=f"e{e}", storage_path="", trainable_name="t", trainable=b"", python="",
            cwd="", sys_path=[], env={}, trials=[],
        )  # fmt: skip
        exp = Experiment(id=f"e{e}", spec=spec, path=Path(), seq=e)
        for i in range(100):
            trial = Trial(
                id=f"e{e}_{i}", index=i, tag="", experiment=exp, config=msgspec.Raw(b"{}"),
                request=cpu if i % 2 else gpu, resources=[],
            )  # fmt: skip
            exp.trials.append(trial)
            exp.queue.append(trial)
        scheduler.add(exp)
    running = []
    for trial, allocation in scheduler.admit():  # fill the machine
        transition(trial, "RUNNING")
        running.append((trial, allocation))
    return scheduler, ledger, running


def pass_ms(experiments: int, passes: int = 200) -> float:
    """Median milliseconds of a pass that starts the trial after one that ended."""
    scheduler, ledger, running = _machine(experiments)
    times = []
    for _ in range(min(passes, scheduler.queued)):
        trial, allocation = running.pop(0)
        ledger.release(allocation)  # type: ignore[arg-type]
        transition(trial, "TERMINATED")
        t = time.perf_counter()
        started = scheduler.admit()
        times.append(time.perf_counter() - t)
        for trial, allocation in started:
            transition(trial, "RUNNING")
            running.append((trial, allocation))
    return statistics.median(times) * 1000


def measure(counts: tuple[int, ...] = (1, 100, 1_000)) -> list[Figure]:
    figures = []
    for n in counts:
        figures.append(
            Figure(
                f"admission pass, {n:,} experiments queued",
                1.0 if n == counts[-1] else None,
                pass_ms(n),
                "ms",
                note="median of up to 200 passes that each start one trial, 4 CPUs and 4 GPUs",
            )
        )
    return figures


def main() -> None:
    counts = tuple(int(a) for a in sys.argv[1:]) or (1, 100, 1_000)
    for fig in measure(counts):
        print(fig.line())


if __name__ == "__main__":
    main()
