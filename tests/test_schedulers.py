"""Trial schedulers: their decisions in-process, and early stopping through a real daemon."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from gates import Barrier, arrive, pass_gate
from tuned_client import tune
from tuned_client.tune.progress import TrialView
from tuned_client.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)


def view(tid: str) -> TrialView:
    return TrialView(trial_id=tid, name=tid, tag=tid, config={}, status="RUNNING")


def test_asha_stops_a_trial_below_the_rung_quantile_and_keeps_a_better_one() -> None:
    sched = ASHAScheduler(metric="loss", mode="min", max_t=9, grace_period=1, reduction_factor=3)
    good, bad, better = view("good"), view("bad"), view("better")
    for t in (good, bad, better):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, good, {"training_iteration": 1, "loss": 1.0}) == "CONTINUE"
    assert sched.on_trial_result(None, bad, {"training_iteration": 1, "loss": 5.0}) == "STOP"
    assert sched.on_trial_result(None, better, {"training_iteration": 1, "loss": 0.5}) == "CONTINUE"
    # the rung at 3 starts empty: the first to reach it goes on; max_t ends every trial
    assert sched.on_trial_result(None, good, {"training_iteration": 3, "loss": 0.9}) == "CONTINUE"
    assert sched.on_trial_result(None, good, {"training_iteration": 9, "loss": 0.1}) == "STOP"


def test_schedulers_need_a_metric_and_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="metric and a mode"):
        ASHAScheduler().on_trial_result(None, view("a"), {"training_iteration": 1})
    with pytest.raises(ValueError, match="reduction_factor"):
        ASHAScheduler(reduction_factor=1)
    with pytest.raises(ValueError, match="mode"):
        MedianStoppingRule(mode="best")
    fifo = FIFOScheduler()
    assert fifo.on_trial_result(None, view("a"), {"x": 1}) == TrialScheduler.CONTINUE
    assert fifo.set_search_properties("loss", "min") and not fifo.set_search_properties("acc", None)


def test_median_stopping_rule_stops_a_trial_below_the_median_of_the_others() -> None:
    rule = MedianStoppingRule(
        time_attr="training_iteration", metric="acc", mode="max", grace_period=2,
        min_samples_required=2,
    )  # fmt: skip
    trials = [view(f"t{i}") for i in range(3)]
    for step in range(1, 5):
        for t, acc in zip(trials[:2], (0.8, 0.9), strict=True):
            assert rule.on_trial_result(None, t, {"training_iteration": step, "acc": acc}) == (
                "CONTINUE"
            )
    decisions = [
        rule.on_trial_result(None, trials[2], {"training_iteration": s, "acc": 0.1})
        for s in range(1, 5)
    ]
    assert decisions[:2] == ["CONTINUE", "CONTINUE"]  # inside the grace period
    assert decisions[2] == "STOP"


def test_hyperband_spreads_trials_over_brackets_of_different_grace() -> None:
    hb = HyperBandScheduler(metric="loss", mode="min", max_t=27, reduction_factor=3, seed=0)
    assert len(hb._brackets) == 4
    assert [b.rungs[-1][0] for b in hb._brackets] == [1, 3, 9, 27]


# ------------------------------------------------------------------ through a real daemon

MAX_T = 9


def curve(config: dict[str, Any]) -> None:
    """Deterministic learning curves: a lower ``q`` is better at every step.

    Given ``last`` (a barrier's folder, who waits and for whom), the trial with
    ``q == last["q"]`` starts only once those of ``last["after"]`` have ended.
    """
    last = config.get("last") or {"q": None, "after": []}
    if config["q"] == last["q"]:
        pass_gate(Path(last["barrier"]) / "gate")
    for step in range(1, MAX_T + 1):
        time.sleep(0.03)  # a step of work: the trials' reports interleave
        tune.report({"loss": config["q"] + 1.0 / step})
    if config["q"] in last["after"]:
        arrive(last["barrier"])


def total_iterations(results: tune.ResultGrid) -> int:
    return sum(r.metrics["training_iteration"] for r in results if r.metrics)


@pytest.mark.daemon_args("--num-cpus", "4")
def test_asha_stops_bad_trials_early_and_keeps_the_best(daemon: RunningDaemon) -> None:
    qs = [0.9, 0.1, 0.7, 0.5, 0.8, 0.3, 0.6, 0.4]
    results = tune.Tuner(
        curve,
        param_space={"q": tune.grid_search(qs)},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min",
            scheduler=ASHAScheduler(max_t=MAX_T, grace_period=1, reduction_factor=3),
        ),
        run_config=tune.RunConfig(name="asha", verbose=0),
    ).fit()  # fmt: skip
    assert len(results) == len(qs) and results.num_errors == 0
    assert results.num_terminated == len(qs)  # stopped trials end TERMINATED, not ERROR
    assert results.get_best_result().config == {"q": 0.1}
    assert results.get_best_result().metrics["training_iteration"] == MAX_T
    stopped = [r for r in results if r.metrics["training_iteration"] < MAX_T]
    assert len(stopped) >= 3
    assert total_iterations(results) < 0.75 * len(qs) * MAX_T


@pytest.mark.timeout(120)  # a barrier never met fails here
@pytest.mark.daemon_args("--num-cpus", "4")
def test_median_stopping_rule_through_the_daemon(daemon: RunningDaemon, tmp_path: Path) -> None:
    # The bad trial starts once the two best have ended (a barrier, not timing): the
    # rule compares it with their whole curves however the machine schedules the four.
    # (Those two are never stopped; 0.3 may be, depending on when its results come.)
    barrier = Barrier(tmp_path / "best", parties=2)
    results = tune.Tuner(
        curve,
        param_space={
            "q": tune.grid_search([0.1, 0.2, 0.3, 5.0]),
            "last": {"q": 5.0, "after": [0.1, 0.2], "barrier": str(barrier.folder)},
        },
        tune_config=tune.TuneConfig(
            metric="loss", mode="min",
            scheduler=MedianStoppingRule(
                time_attr="training_iteration", grace_period=2, min_samples_required=2
            ),
        ),
        run_config=tune.RunConfig(name="median", verbose=0),
    ).fit()  # fmt: skip
    by_q = {r.config["q"]: r for r in results}
    assert by_q[5.0].metrics["training_iteration"] < MAX_T
    assert by_q[5.0].status == "TERMINATED"
    assert by_q[0.1].metrics["training_iteration"] == MAX_T
