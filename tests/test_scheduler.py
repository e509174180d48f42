"""The admission rules of the pure scheduler, one by one, on a made-up machine.

Each test builds experiments of trials with given asks, lets the scheduler admit
what may start, ends trials by hand, and looks at who started and where. The
property tests at the end (``test_scheduler_properties``) run random mixes on a
virtual clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec
from tuned_client.protocol import ExperimentSpec

from tuned.core.ledger import SCALE, Allocation, Capacity, Ledger, parse_request, to_units
from tuned.core.model import Experiment, Trial, transition
from tuned.core.scheduler import Scheduler

GiB = 2**30


class Machine:
    """A ledger, a scheduler, and the trials running on them."""

    def __init__(self, cpu: float = 64, gpus: int = 4, memory: int = 64 * GiB) -> None:
        capacity = Capacity(
            cpu=to_units(cpu, resource="cpu"),
            memory=memory,
            gpu_ids=tuple(str(i) for i in range(gpus)),
        )
        self.ledger = Ledger(capacity)
        self.scheduler = Scheduler(self.ledger)
        self.running: dict[str, tuple[Trial, Allocation]] = {}
        self._seq = 0

    def submit(
        self,
        *asks: Mapping[str, float],
        priority: int = 0,
        limit: int = 0,
        name: str = "",
    ) -> Experiment:
        spec = ExperimentSpec(
            name=name, storage_path="", trainable_name="t", trainable=b"", python="", cwd="",
            sys_path=[], env={}, trials=[], priority=priority, max_concurrent_trials=limit,
        )  # fmt: skip
        exp = Experiment(id=name or f"e{self._seq}", spec=spec, path=Path(), seq=self._seq)
        self._seq += 1
        for i, ask in enumerate(asks):
            trial = Trial(
                id=f"{exp.id}_{i}", index=i, tag="", experiment=exp, config=msgspec.Raw(b"{}"),
                request=parse_request([dict(ask)]), resources=[],
            )  # fmt: skip
            exp.trials.append(trial)
            exp.queue.append(trial)
        self.scheduler.add(exp)
        return exp

    def admit(self) -> list[str]:
        """Ids of the trials that start now, in the order the scheduler gave them."""
        started = []
        for trial, allocation in self.scheduler.admit():
            transition(trial, "RUNNING")
            self.running[trial.id] = (trial, allocation)
            started.append(trial.id)
        return started

    def end(self, *ids: str) -> None:
        for trial_id in ids:
            trial, allocation = self.running.pop(trial_id)
            self.ledger.release(allocation)
            transition(trial, "TERMINATED")

    def devices(self, trial_id: str) -> list[int]:
        return [index for index, _ in self.running[trial_id][1].gpus]


def test_trials_that_ask_the_same_start_in_queue_order() -> None:
    m = Machine(cpu=2, gpus=0)
    m.submit(*[{"cpu": 1}] * 5, name="a")
    assert m.admit() == ["a_0", "a_1"]
    m.end("a_0")
    assert m.admit() == ["a_2"]


def test_the_biggest_asks_start_first_and_small_ones_fill_the_gaps() -> None:
    m = Machine(gpus=4)
    m.submit({"gpu": 0.25}, {"gpu": 0.25}, {"gpu": 2}, {"gpu": 1}, {"gpu": 0.5}, name="a")
    assert m.admit() == ["a_2", "a_3", "a_4", "a_0", "a_1"]
    assert m.devices("a_2") == [0, 1] and m.devices("a_3") == [2]
    assert m.devices("a_4") == m.devices("a_0") == m.devices("a_1") == [3]  # best fit


def test_a_whole_gpu_trial_that_waits_holds_devices_that_fractions_leave_alone() -> None:
    m = Machine(gpus=2)
    m.submit({"gpu": 0.5}, {"gpu": 0.5}, {"gpu": 0.5}, name="a")
    assert m.admit() == ["a_0", "a_1", "a_2"]  # device 0 full, device 1 half used
    m.submit({"gpu": 1}, *[{"gpu": 0.25}] * 6, name="b")
    # b's whole-GPU trial waits; it holds the least used device (1), whose free half
    # the quarters leave alone: they would fit there, but would keep it from draining.
    assert m.admit() == []
    assert m.scheduler.holds()["b_0"].gpus == {1: SCALE}
    m.end("a_0")  # device 0 has room again: quarters backfill there, not on device 1
    assert m.admit() == ["b_1", "b_2"]
    assert m.devices("b_1") == m.devices("b_2") == [0]
    m.end("a_2")  # device 1 drained: the whole-GPU trial gets it before any quarter
    assert m.admit()[0] == "b_0" and m.devices("b_0") == [1]


def test_a_trial_short_of_memory_keeps_no_cpu_idle_that_the_memory_users_give_back() -> None:
    m = Machine(cpu=4, gpus=0, memory=16 * GiB)
    m.submit({"cpu": 1, "memory": 8 * GiB}, {"cpu": 1, "memory": 12 * GiB}, name="a")
    assert m.admit() == ["a_1"]  # the bigger first; a_0 waits for memory, three CPUs free
    hold = m.scheduler.holds()["a_0"]
    assert (hold.memory, hold.cpu) == (8 * GiB, 0)  # a_1 gives back a CPU with its memory
    m.submit({"cpu": 3}, name="b")
    assert m.admit() == ["b_0"]  # the free CPUs backfill
    m.end("a_1")
    assert m.admit() == ["a_0"]  # and the holder was not delayed by it


def test_a_cpu_hold_keeps_what_the_trials_it_waits_for_do_not_give_back() -> None:
    m = Machine(cpu=4, gpus=1)
    m.submit({"gpu": 1, "cpu": 0}, name="a")
    assert m.admit() == ["a_0"]
    m.submit({"gpu": 1, "cpu": 3}, *[{"cpu": 1}] * 4, name="b")
    # b_0 waits for the GPU; a_0 gives back no CPU, so b_0 holds its 3 CPUs.
    assert m.admit() == ["b_1"]
    assert m.scheduler.holds()["b_0"].cpu == 3 * SCALE
    m.end("a_0")
    assert m.admit() == ["b_0"]


def test_experiments_share_the_machine_fairly() -> None:
    m = Machine(cpu=4, gpus=0)
    m.submit(*[{"cpu": 1}] * 8, name="a")
    assert len(m.admit()) == 4
    m.submit(*[{"cpu": 1}] * 8, name="b")
    assert m.admit() == []
    m.end("a_0")
    assert m.admit() == ["b_0"]  # b holds nothing, a three quarters: b goes first
    m.end("a_1")
    assert m.admit() == ["b_1"]
    m.end("a_2")
    assert m.admit() == ["a_4"]  # two each now: the earlier experiment wins the tie


def test_a_higher_priority_goes_first_whatever_its_share() -> None:
    m = Machine(cpu=2, gpus=0)
    m.submit(*[{"cpu": 1}] * 4, name="low")
    m.submit(*[{"cpu": 1}] * 4, name="high", priority=5)
    assert m.admit() == ["high_0", "high_1"]
    m.end("high_0")
    assert m.admit() == ["high_2"]


def test_a_higher_priority_takes_capacity_held_for_a_lower_one() -> None:
    m = Machine(cpu=4, gpus=1)
    m.submit({"cpu": 1, "gpu": 1}, name="a")
    assert m.admit() == ["a_0"]
    m.submit({"cpu": 2, "gpu": 1}, name="low")
    assert m.admit() == []
    assert "low_0" in m.scheduler.holds()
    m.submit({"cpu": 1, "gpu": 1}, name="high", priority=1)
    m.end("a_0")
    assert m.admit() == ["high_0"]


def test_max_concurrent_trials_counts_what_the_same_pass_started() -> None:
    m = Machine(cpu=4, gpus=0)
    m.submit({"cpu": 4}, name="a")
    assert m.admit() == ["a_0"]
    exp = m.submit({"cpu": 1.5}, *[{"cpu": 0.25}] * 8, name="b", limit=3)
    assert m.admit() == []
    assert list(m.scheduler.holds()) == ["b_0"]
    m.end("a_0")
    # The holder and two quarters: three, though the CPUs would take ten quarters.
    assert m.admit() == ["b_0", "b_1", "b_2"]
    assert exp.running == 3
    m.end("b_1")
    assert m.admit() == ["b_3"]


def test_trials_that_each_need_most_of_the_machine_start_one_after_the_other() -> None:
    m = Machine(cpu=8, gpus=0)
    m.submit(*[{"cpu": 1}] * 8, name="a")
    assert len(m.admit()) == 8
    m.submit({"cpu": 5}, name="b")
    m.submit({"cpu": 5}, name="c", priority=1)
    m.submit({"cpu": 5}, name="d")
    assert m.admit() == []
    m.end(*[f"a_{i}" for i in range(8)])
    assert m.admit() == ["c_0"]
    m.end("c_0")
    assert m.admit() == ["b_0"]
    m.end("b_0")
    assert m.admit() == ["d_0"]


class CountingLedger(Ledger):
    tries = 0

    def acquire(self, *args: object, **kwargs: object) -> Allocation | None:
        CountingLedger.tries += 1
        return super().acquire(*args, **kwargs)  # type: ignore[arg-type]


def test_a_pass_tries_each_request_once_however_many_experiments_ask_for_it() -> None:
    m = Machine(cpu=1, gpus=0)
    m.ledger = CountingLedger(m.ledger.capacity)
    m.scheduler = Scheduler(m.ledger)
    m.submit({"cpu": 1}, name="running")
    m.admit()
    for i in range(1_000):
        m.submit(*[{"cpu": 1}] * 10, name=f"q{i}")
    CountingLedger.tries = 0
    assert m.admit() == []
    # One try for the shared request, one for each holder's own (at most four hold).
    assert CountingLedger.tries <= 1 + 4
