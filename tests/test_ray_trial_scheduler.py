"""Ray Tune's ``python/ray/tune/tests/test_trial_scheduler.py``, import swapped.

The suites that drive the schedulers through their public methods
(``on_trial_add/result/complete``, ``save``/``restore``) with hand-made
``Trial("PPO")`` objects, and the end-to-end runs through ``tune.run``:
``EarlyStoppingSuite`` (MedianStoppingRule) and ``AsyncHyperBandSuite`` (ASHA,
and the NaN/inf cases of HyperBand and PBT). Their ``ray.init()`` set-ups are
dropped where nothing runs; the end-to-end tests use one daemon per module.

Left out, each for a reason: ``HyperbandSuite`` reads HyperBand's private
brackets (``_hyperbands``, ``_state``) and tests its synchronous halving
(tuned's HyperBand runs asynchronously: README); the PBT suites drive Ray's
private ``_MockTrialRunner``/``TrialExecutor`` and ``_exploit``; ``testBOHBNanInf``
mocks the runner's private ``_search_alg``. Ray's current ``PopulationBasedTraining``
refuses to be made without ``hyperparam_mutations`` (so does tuned's); the
indexed version of this file predates that, so its two PBT tests pass
``hyperparam_mutations={"ignored": [1]}``, as Ray's later tests do.
"""

from __future__ import annotations

import os
import tempfile
import unittest
from typing import Any
from unittest.mock import MagicMock

import numpy as np
import pytest
from tuned_client import tune
from tuned_client.tune.experiment import Trial
from tuned_client.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandForBOHB,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)


def result(t: float, rew: float) -> dict[str, Any]:
    return dict(time_total_s=t, episode_reward_mean=rew, training_iteration=int(t))


def mock_trial_runner(trials: list[Trial] | None = None) -> Any:
    trial_runner = MagicMock()
    trial_runner.get_trials.return_value = trials or []
    return trial_runner


class EarlyStoppingSuite(unittest.TestCase):
    def basicSetup(self, rule: Any) -> tuple[Trial, Trial]:
        t1 = Trial("PPO")  # mean is 450, max 900, t_max=10
        t2 = Trial("PPO")  # mean is 450, max 450, t_max=5
        runner = mock_trial_runner()
        for i in range(10):
            r1 = result(i, i * 100)
            self.assertEqual(rule.on_trial_result(runner, t1, r1), TrialScheduler.CONTINUE)
        for i in range(5):
            r2 = result(i, 450)
            self.assertEqual(rule.on_trial_result(runner, t2, r2), TrialScheduler.CONTINUE)
        return t1, t2

    def testMedianStoppingConstantPerf(self) -> None:
        rule = MedianStoppingRule(
            metric="episode_reward_mean", mode="max", grace_period=0, min_samples_required=1
        )
        t1, t2 = self.basicSetup(rule)
        runner = mock_trial_runner()
        rule.on_trial_complete(runner, t1, result(10, 1000))
        self.assertEqual(rule.on_trial_result(runner, t2, result(5, 450)), TrialScheduler.CONTINUE)
        self.assertEqual(rule.on_trial_result(runner, t2, result(6, 0)), TrialScheduler.CONTINUE)
        self.assertEqual(rule.on_trial_result(runner, t2, result(10, 450)), TrialScheduler.STOP)

    def testMedianStoppingOnCompleteOnly(self) -> None:
        rule = MedianStoppingRule(
            metric="episode_reward_mean", mode="max", grace_period=0, min_samples_required=1
        )
        t1, t2 = self.basicSetup(rule)
        runner = mock_trial_runner()
        self.assertEqual(rule.on_trial_result(runner, t2, result(100, 0)), TrialScheduler.CONTINUE)
        rule.on_trial_complete(runner, t1, result(101, 1000))
        self.assertEqual(rule.on_trial_result(runner, t2, result(101, 0)), TrialScheduler.STOP)

    def testMedianStoppingGracePeriod(self) -> None:
        rule = MedianStoppingRule(
            metric="episode_reward_mean", mode="max", grace_period=2.5, min_samples_required=1
        )
        t1, t2 = self.basicSetup(rule)
        runner = mock_trial_runner()
        rule.on_trial_complete(runner, t1, result(10, 1000))
        rule.on_trial_complete(runner, t2, result(10, 1000))
        t3 = Trial("PPO")
        self.assertEqual(rule.on_trial_result(runner, t3, result(1, 10)), TrialScheduler.CONTINUE)
        self.assertEqual(rule.on_trial_result(runner, t3, result(2, 10)), TrialScheduler.CONTINUE)
        self.assertEqual(rule.on_trial_result(runner, t3, result(3, 10)), TrialScheduler.STOP)

    def testMedianStoppingMinSamples(self) -> None:
        rule = MedianStoppingRule(
            metric="episode_reward_mean", mode="max", grace_period=0, min_samples_required=2
        )
        t1, t2 = self.basicSetup(rule)
        runner = mock_trial_runner()
        rule.on_trial_complete(runner, t1, result(10, 1000))
        t3 = Trial("PPO")
        # Insufficient samples to evaluate t3
        self.assertEqual(rule.on_trial_result(runner, t3, result(5, 10)), TrialScheduler.CONTINUE)
        rule.on_trial_complete(runner, t2, result(5, 1000))
        # Sufficient samples to evaluate t3
        self.assertEqual(rule.on_trial_result(runner, t3, result(5, 10)), TrialScheduler.STOP)

    def testMedianStoppingUsesMedian(self) -> None:
        rule = MedianStoppingRule(
            metric="episode_reward_mean", mode="max", grace_period=0, min_samples_required=1
        )
        t1, t2 = self.basicSetup(rule)
        runner = mock_trial_runner()
        rule.on_trial_complete(runner, t1, result(10, 1000))
        rule.on_trial_complete(runner, t2, result(10, 1000))
        t3 = Trial("PPO")
        self.assertEqual(rule.on_trial_result(runner, t3, result(1, 260)), TrialScheduler.CONTINUE)
        self.assertEqual(rule.on_trial_result(runner, t3, result(2, 260)), TrialScheduler.STOP)

    def testMedianStoppingSoftStop(self) -> None:
        rule = MedianStoppingRule(
            metric="episode_reward_mean",
            mode="max",
            grace_period=0,
            min_samples_required=1,
            hard_stop=False,
        )
        t1, t2 = self.basicSetup(rule)
        runner = mock_trial_runner()
        rule.on_trial_complete(runner, t1, result(10, 1000))
        rule.on_trial_complete(runner, t2, result(10, 1000))
        t3 = Trial("PPO")
        self.assertEqual(rule.on_trial_result(runner, t3, result(1, 260)), TrialScheduler.CONTINUE)
        self.assertEqual(rule.on_trial_result(runner, t3, result(2, 260)), TrialScheduler.PAUSE)

    def _test_metrics(self, result_func: Any, metric: str, mode: str) -> None:
        rule = MedianStoppingRule(
            grace_period=0,
            min_samples_required=1,
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
        )
        t1 = Trial("PPO")  # mean is 450, max 900, t_max=10
        t2 = Trial("PPO")  # mean is 450, max 450, t_max=5
        runner = mock_trial_runner()
        for i in range(10):
            self.assertEqual(
                rule.on_trial_result(runner, t1, result_func(i, i * 100)),
                TrialScheduler.CONTINUE,
            )
        for i in range(5):
            self.assertEqual(
                rule.on_trial_result(runner, t2, result_func(i, 450)), TrialScheduler.CONTINUE
            )
        rule.on_trial_complete(runner, t1, result_func(10, 1000))
        self.assertEqual(
            rule.on_trial_result(runner, t2, result_func(5, 450)), TrialScheduler.CONTINUE
        )
        self.assertEqual(
            rule.on_trial_result(runner, t2, result_func(6, 0)), TrialScheduler.CONTINUE
        )

    def testAlternateMetrics(self) -> None:
        def result2(t: float, rew: float) -> dict[str, Any]:
            return dict(training_iteration=t, neg_mean_loss=rew)

        self._test_metrics(result2, "neg_mean_loss", "max")

    def testAlternateMetricsMin(self) -> None:
        def result2(t: float, rew: float) -> dict[str, Any]:
            return dict(training_iteration=t, mean_loss=-rew)

        self._test_metrics(result2, "mean_loss", "min")


class AsyncHyperBandSuite(unittest.TestCase):
    def basicSetup(self, scheduler: Any) -> tuple[Trial, Trial]:
        t1 = Trial("PPO")  # mean is 450, max 900, t_max=10
        t2 = Trial("PPO")  # mean is 450, max 450, t_max=5
        scheduler.on_trial_add(None, t1)
        scheduler.on_trial_add(None, t2)
        for i in range(10):
            self.assertEqual(
                scheduler.on_trial_result(None, t1, result(i, i * 100)), TrialScheduler.CONTINUE
            )
        for i in range(5):
            self.assertEqual(
                scheduler.on_trial_result(None, t2, result(i, 450)), TrialScheduler.CONTINUE
            )
        return t1, t2

    def nanSetup(self, scheduler: Any) -> tuple[Trial, Trial]:
        t1 = Trial("PPO")  # mean is 450, max 450, t_max=10
        t2 = Trial("PPO")  # mean is nan, max nan, t_max=10
        scheduler.on_trial_add(None, t1)
        scheduler.on_trial_add(None, t2)
        for i in range(10):
            self.assertEqual(
                scheduler.on_trial_result(None, t1, result(i, 450)), TrialScheduler.CONTINUE
            )
        for i in range(10):
            self.assertEqual(
                scheduler.on_trial_result(None, t2, result(i, np.nan)), TrialScheduler.CONTINUE
            )
        return t1, t2

    def nanInfSetup(self, scheduler: Any, runner: Any = None) -> tuple[Trial, Trial, Trial]:
        t1 = Trial("PPO")
        t2 = Trial("PPO")
        t3 = Trial("PPO")
        scheduler.on_trial_add(runner, t1)
        scheduler.on_trial_add(runner, t2)
        scheduler.on_trial_add(runner, t3)
        for i in range(10):
            scheduler.on_trial_result(runner, t1, result(i, np.nan))
        for i in range(10):
            scheduler.on_trial_result(runner, t2, result(i, float("inf")))
        for i in range(10):
            scheduler.on_trial_result(runner, t3, result(i, float("-inf")))
        return t1, t2, t3

    def testAsyncHBOnComplete(self) -> None:
        scheduler = AsyncHyperBandScheduler(
            metric="episode_reward_mean", mode="max", max_t=10, brackets=1
        )
        _t1, t2 = self.basicSetup(scheduler)
        t3 = Trial("PPO")
        scheduler.on_trial_add(None, t3)
        scheduler.on_trial_complete(None, t3, result(10, 1000))
        self.assertEqual(scheduler.on_trial_result(None, t2, result(101, 0)), TrialScheduler.STOP)

    def testAsyncHBGracePeriod(self) -> None:
        scheduler = AsyncHyperBandScheduler(
            metric="episode_reward_mean",
            mode="max",
            grace_period=2.5,
            reduction_factor=3,
            brackets=1,
        )
        t1, t2 = self.basicSetup(scheduler)
        scheduler.on_trial_complete(None, t1, result(10, 1000))
        scheduler.on_trial_complete(None, t2, result(10, 1000))
        t3 = Trial("PPO")
        scheduler.on_trial_add(None, t3)
        self.assertEqual(
            scheduler.on_trial_result(None, t3, result(1, 10)), TrialScheduler.CONTINUE
        )
        self.assertEqual(
            scheduler.on_trial_result(None, t3, result(2, 10)), TrialScheduler.CONTINUE
        )
        self.assertEqual(scheduler.on_trial_result(None, t3, result(3, 10)), TrialScheduler.STOP)

    def testAsyncHBAllCompletes(self) -> None:
        scheduler = AsyncHyperBandScheduler(
            metric="episode_reward_mean", mode="max", max_t=10, brackets=10
        )
        trials = [Trial("PPO") for i in range(10)]
        for t in trials:
            scheduler.on_trial_add(None, t)

        for t in trials:
            self.assertEqual(
                scheduler.on_trial_result(None, t, result(10, -2)), TrialScheduler.STOP
            )

    def testAsyncHBUsesPercentile(self) -> None:
        scheduler = AsyncHyperBandScheduler(
            metric="episode_reward_mean",
            mode="max",
            grace_period=1,
            max_t=10,
            reduction_factor=2,
            brackets=1,
        )
        t1, t2 = self.basicSetup(scheduler)
        scheduler.on_trial_complete(None, t1, result(10, 1000))
        scheduler.on_trial_complete(None, t2, result(10, 1000))
        t3 = Trial("PPO")
        scheduler.on_trial_add(None, t3)
        self.assertEqual(scheduler.on_trial_result(None, t3, result(1, 260)), TrialScheduler.STOP)
        self.assertEqual(scheduler.on_trial_result(None, t3, result(2, 260)), TrialScheduler.STOP)

    def testAsyncHBNanPercentile(self) -> None:
        scheduler = AsyncHyperBandScheduler(
            metric="episode_reward_mean",
            mode="max",
            grace_period=1,
            max_t=10,
            reduction_factor=2,
            brackets=1,
        )
        t1, t2 = self.nanSetup(scheduler)
        scheduler.on_trial_complete(None, t1, result(10, 450))
        scheduler.on_trial_complete(None, t2, result(10, np.nan))
        t3 = Trial("PPO")
        scheduler.on_trial_add(None, t3)
        self.assertEqual(scheduler.on_trial_result(None, t3, result(1, 260)), TrialScheduler.STOP)
        self.assertEqual(scheduler.on_trial_result(None, t3, result(2, 260)), TrialScheduler.STOP)

    def testAsyncHBSaveRestore(self) -> None:
        fd, tmpfile = tempfile.mkstemp()
        os.close(fd)
        try:
            scheduler = AsyncHyperBandScheduler(
                metric="episode_reward_mean",
                mode="max",
                grace_period=1,
                max_t=10,
                reduction_factor=2,
                brackets=1,
            )

            # Add some trials
            trials = [Trial("PPO") for i in range(10)]
            for t in trials:
                scheduler.on_trial_add(None, t)

            # Report some results
            for t in trials[0:5]:
                self.assertNotEqual(
                    scheduler.on_trial_result(None, t, result(1, 10)), TrialScheduler.STOP
                )

            # Report worse result: Trial should stop
            self.assertEqual(
                scheduler.on_trial_result(None, trials[5], result(1, 5)), TrialScheduler.STOP
            )

            scheduler.save(tmpfile)

            scheduler2 = AsyncHyperBandScheduler()
            scheduler2.restore(tmpfile)

            # Report a new bad result: Trial should stop
            self.assertEqual(
                scheduler2.on_trial_result(None, trials[6], result(1, 4)), TrialScheduler.STOP
            )

            # Create a new trial and report bad result: Trial should stop
            new_trial = Trial("PPO")
            scheduler2.on_trial_add(None, new_trial)
            self.assertEqual(
                scheduler2.on_trial_result(None, new_trial, result(1, 2)), TrialScheduler.STOP
            )
        finally:
            os.unlink(tmpfile)  # Ray's leaves it in /tmp

    def testAsyncHBNonStopTrials(self) -> None:
        trials = [Trial("PPO") for i in range(4)]
        scheduler = AsyncHyperBandScheduler(
            metric="metric",
            mode="max",
            grace_period=1,
            max_t=3,
            reduction_factor=2,
            brackets=1,
            stop_last_trials=False,
        )
        for t in trials:
            scheduler.on_trial_add(None, t)

        # Report one result
        action = scheduler.on_trial_result(None, trials[0], {"training_iteration": 2, "metric": 10})
        assert action == TrialScheduler.CONTINUE
        action = scheduler.on_trial_result(None, trials[1], {"training_iteration": 2, "metric": 8})
        assert action == TrialScheduler.STOP
        action = scheduler.on_trial_result(None, trials[2], {"training_iteration": 2, "metric": 6})
        assert action == TrialScheduler.STOP
        action = scheduler.on_trial_result(None, trials[3], {"training_iteration": 2, "metric": 4})
        assert action == TrialScheduler.STOP

        # Report more. This will fail if `stop_last_trials=True`
        action = scheduler.on_trial_result(None, trials[0], {"training_iteration": 4, "metric": 10})
        assert action == TrialScheduler.CONTINUE

        action = scheduler.on_trial_result(None, trials[0], {"training_iteration": 8, "metric": 10})
        assert action == TrialScheduler.CONTINUE

        # Also continue if we fall below the cutoff eventually
        action = scheduler.on_trial_result(None, trials[0], {"training_iteration": 14, "metric": 1})
        assert action == TrialScheduler.CONTINUE

    def testMedianStoppingNanInf(self) -> None:
        scheduler = MedianStoppingRule(metric="episode_reward_mean", mode="max")

        t1, t2, t3 = self.nanInfSetup(scheduler)
        scheduler.on_trial_complete(None, t1, result(10, np.nan))
        scheduler.on_trial_complete(None, t2, result(10, float("inf")))
        scheduler.on_trial_complete(None, t3, result(10, float("-inf")))

    def testHyperbandNanInf(self) -> None:
        scheduler = HyperBandScheduler(metric="episode_reward_mean", mode="max")
        t1, t2, t3 = self.nanInfSetup(scheduler)
        scheduler.on_trial_complete(None, t1, result(10, np.nan))
        scheduler.on_trial_complete(None, t2, result(10, float("inf")))
        scheduler.on_trial_complete(None, t3, result(10, float("-inf")))

    def testPBTNanInf(self) -> None:
        scheduler = PopulationBasedTraining(
            metric="episode_reward_mean", mode="max", hyperparam_mutations={"ignored": [1]}
        )
        t1, t2, t3 = self.nanInfSetup(scheduler, runner=MagicMock())
        scheduler.on_trial_complete(None, t1, result(10, np.nan))
        scheduler.on_trial_complete(None, t2, result(10, float("inf")))
        scheduler.on_trial_complete(None, t3, result(10, float("-inf")))

    def _test_metrics(self, result_func: Any, metric: str, mode: str) -> None:
        scheduler = AsyncHyperBandScheduler(
            grace_period=1,
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            brackets=1,
        )
        t1 = Trial("PPO")  # mean is 450, max 900, t_max=10
        t2 = Trial("PPO")  # mean is 450, max 450, t_max=5
        scheduler.on_trial_add(None, t1)
        scheduler.on_trial_add(None, t2)
        for i in range(10):
            self.assertEqual(
                scheduler.on_trial_result(None, t1, result_func(i, i * 100)),
                TrialScheduler.CONTINUE,
            )
        for i in range(5):
            self.assertEqual(
                scheduler.on_trial_result(None, t2, result_func(i, 450)), TrialScheduler.CONTINUE
            )
        scheduler.on_trial_complete(None, t1, result_func(10, 1000))
        self.assertEqual(
            scheduler.on_trial_result(None, t2, result_func(5, 450)), TrialScheduler.CONTINUE
        )
        self.assertEqual(
            scheduler.on_trial_result(None, t2, result_func(6, 0)), TrialScheduler.CONTINUE
        )

    def testAlternateMetrics(self) -> None:
        def result2(t: float, rew: float) -> dict[str, Any]:
            return dict(training_iteration=t, neg_mean_loss=rew)

        self._test_metrics(result2, "neg_mean_loss", "max")

    def testAlternateMetricsMin(self) -> None:
        def result2(t: float, rew: float) -> dict[str, Any]:
            return dict(training_iteration=t, mean_loss=-rew)

        self._test_metrics(result2, "mean_loss", "min")


@pytest.mark.usefixtures("module_daemon")
class AnonymousMetricEndToEnd(unittest.TestCase):
    """AsyncHyperBandSuite's end-to-end tests: each scheduler with Ray's anonymous
    metric (a trainable that returns a value) through ``tune.run``."""

    def _testAnonymousMetricEndToEnd(self, scheduler_cls: Any, searcher: Any = None) -> None:
        def train_fn(config: dict[str, Any]) -> Any:
            return config["value"]

        out = tune.run(
            train_fn,
            mode="max",
            num_samples=1,
            config={"value": tune.uniform(-2.0, 2.0)},
            scheduler=scheduler_cls(),
            search_alg=searcher,
        )

        self.assertTrue(bool(out.best_trial))

    def testAnonymousMetricEndToEndFIFO(self) -> None:
        self._testAnonymousMetricEndToEnd(FIFOScheduler)

    def testAnonymousMetricEndToEndASHA(self) -> None:
        self._testAnonymousMetricEndToEnd(AsyncHyperBandScheduler)

    def testAnonymousMetricEndToEndBOHB(self) -> None:
        from tuned_client.tune.search.bohb import TuneBOHB

        self._testAnonymousMetricEndToEnd(HyperBandForBOHB, TuneBOHB())

    def testAnonymousMetricEndToEndMedian(self) -> None:
        self._testAnonymousMetricEndToEnd(MedianStoppingRule)

    def testAnonymousMetricEndToEndPBT(self) -> None:
        self._testAnonymousMetricEndToEnd(
            lambda: PopulationBasedTraining(hyperparam_mutations={"ignored": [1]})
        )
