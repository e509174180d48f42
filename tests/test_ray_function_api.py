"""Ray Tune's ``python/ray/tune/tests/test_function_api.py``, import swapped.

``FunctionApiTest``'s tests, which run trainables through ``tune.run``, against
one 2-CPU daemon for the module (Ray's ``setUp`` starts 4 CPUs; 2 suffice).
Left out: ``FunctionCheckpointingTest``, which drives Ray's private
``wrap_function(...)(logger_creator=..., storage=mock_storage_context())``
trainable by hand (save/restore of a function actor has no counterpart: a
trial's checkpoints are its ``tune.report(..., checkpoint=)`` folders).
``testWithParametersTwoRuns1`` restarts Ray between its two runs (``tearDown``,
``setUp``); here the daemon stays: the point, two runs of two different
``with_parameters`` trainables in one process, is kept. ``testWithParameters2``
asserts that a ``with_parameters`` trainable pickled by hand is small: in Ray its
objects are in the object store; tuned has none, and stores them in the
experiment's folder when ``fit()`` pickles the trainable (README).
"""

from __future__ import annotations

import unittest
from typing import Any

import pytest
from tuned_client import train as ray_train  # Ray's test imports ``ray.train``
from tuned_client import tune
from tuned_client.train import CheckpointConfig
from tuned_client.tune import with_parameters
from tuned_client.tune.execution.placement_groups import PlacementGroupFactory
from tuned_client.tune.result import DEFAULT_METRIC
from tuned_client.tune.schedulers import ResourceChangingScheduler


@pytest.mark.usefixtures("module_daemon")
class FunctionApiTest(unittest.TestCase):
    def testCheckpointError(self) -> None:
        def train_fn(config: dict[str, Any]) -> None:
            pass

        with self.assertRaises(ValueError):
            tune.run(train_fn, checkpoint_config=CheckpointConfig(checkpoint_frequency=1))

        with self.assertRaises(ValueError):
            tune.run(train_fn, checkpoint_config=CheckpointConfig(checkpoint_at_end=True))

    def testWithParameters(self) -> None:
        class Data:
            def __init__(self) -> None:
                self.data = [0] * 500_000

        data = Data()
        data.data[100] = 1

        def train_fn(config: dict[str, Any], data: Any = None) -> None:
            data.data[101] = 2  # Changes are local
            ray_train.report(dict(metric=len(data.data), hundred=data.data[100]))

        trial_1, trial_2 = tune.run(with_parameters(train_fn, data=data), num_samples=2).trials

        # ray.cloudpickle will crash for some reason
        self.assertEqual(data.data[101], 0)
        self.assertEqual(trial_1.last_result["metric"], 500_000)
        self.assertEqual(trial_1.last_result["hundred"], 1)
        self.assertEqual(trial_2.last_result["metric"], 500_000)
        self.assertEqual(trial_2.last_result["hundred"], 1)
        self.assertTrue(str(trial_1).startswith("train_"))

        # With checkpoint dir parameter
        def train_fn(config: dict[str, Any], data: Any = None) -> None:  # type: ignore[no-redef]
            data.data[101] = 2  # Changes are local
            ray_train.report(dict(metric=len(data.data)))

        trial_1, trial_2 = tune.run(with_parameters(train_fn, data=data), num_samples=2).trials

        self.assertEqual(data.data[101], 0)
        self.assertEqual(trial_1.last_result["metric"], 500_000)
        self.assertEqual(trial_2.last_result["metric"], 500_000)
        self.assertTrue(str(trial_1).startswith("train_"))

    def testNewResources(self) -> None:
        sched = ResourceChangingScheduler(
            resources_allocation_function=(
                lambda a, b, c, d: PlacementGroupFactory([{"CPU": 2}])
            )
        )

        def train_fn(config: dict[str, Any]) -> None:
            ray_train.report(
                dict(metric=1, resources=ray_train.get_context().get_trial_resources())
            )

        analysis = tune.run(
            train_fn,
            scheduler=sched,
            stop={"training_iteration": 2},
            resources_per_trial=PlacementGroupFactory([{"CPU": 1}]),
            num_samples=1,
        )

        results_list = list(analysis.results.values())
        assert results_list[0]["resources"].head_cpus == 2.0

    def testWithParametersTwoRuns1(self) -> None:
        # Makes sure two runs in the same script but different ray sessions
        # pass (https://github.com/ray-project/ray/issues/16609)
        def train_fn(config: dict[str, Any], extra: int = 4) -> None:
            ray_train.report(dict(metric=extra))

        trainable = tune.with_parameters(train_fn, extra=8)
        out = tune.run(trainable, metric="metric", mode="max")
        self.assertEqual(out.best_result["metric"], 8)

        def train_fn_2(config: dict[str, Any], extra: int = 5) -> None:
            ray_train.report(dict(metric=extra))

        trainable = tune.with_parameters(train_fn_2, extra=9)
        out = tune.run(trainable, metric="metric", mode="max")
        self.assertEqual(out.best_result["metric"], 9)

    def testWithParametersTwoRuns2(self) -> None:
        # Makes sure two runs in the same script
        # pass (https://github.com/ray-project/ray/issues/16609)
        def train_fn(config: dict[str, Any], extra: int = 4) -> None:
            ray_train.report(dict(metric=extra))

        def train_fn_2(config: dict[str, Any], extra: int = 5) -> None:
            ray_train.report(dict(metric=extra))

        trainable1 = tune.with_parameters(train_fn, extra=8)
        trainable2 = tune.with_parameters(train_fn_2, extra=9)

        out1 = tune.run(trainable1, metric="metric", mode="max")
        out2 = tune.run(trainable2, metric="metric", mode="max")
        self.assertEqual(out1.best_result["metric"], 8)
        self.assertEqual(out2.best_result["metric"], 9)

    def testReturnAnonymous(self) -> None:
        def train_fn(config: dict[str, Any]) -> Any:
            return config["a"]

        trial_1, trial_2 = tune.run(train_fn, config={"a": tune.grid_search([4, 8])}).trials

        self.assertEqual(trial_1.last_result[DEFAULT_METRIC], 4)
        self.assertEqual(trial_2.last_result[DEFAULT_METRIC], 8)

    def testReturnSpecific(self) -> None:
        def train_fn(config: dict[str, Any]) -> Any:
            return {"m": config["a"]}

        trial_1, trial_2 = tune.run(train_fn, config={"a": tune.grid_search([4, 8])}).trials

        self.assertEqual(trial_1.last_result["m"], 4)
        self.assertEqual(trial_2.last_result["m"], 8)

    def testYieldAnonymous(self) -> None:
        def train_fn(config: dict[str, Any]) -> Any:
            for i in range(10):
                yield config["a"] + i

        trial_1, trial_2 = tune.run(train_fn, config={"a": tune.grid_search([4, 8])}).trials

        self.assertEqual(trial_1.last_result[DEFAULT_METRIC], 4 + 9)
        self.assertEqual(trial_2.last_result[DEFAULT_METRIC], 8 + 9)

    def testYieldSpecific(self) -> None:
        def train_fn(config: dict[str, Any]) -> Any:
            for i in range(10):
                yield {"m": config["a"] + i}

        trial_1, trial_2 = tune.run(train_fn, config={"a": tune.grid_search([4, 8])}).trials

        self.assertEqual(trial_1.last_result["m"], 4 + 9)
        self.assertEqual(trial_2.last_result["m"], 8 + 9)
