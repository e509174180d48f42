"""``ResourceChangingScheduler``: give running trials more (or fewer) resources as others end.

It wraps another scheduler and, whenever that one lets a trial go on, asks
``resources_allocation_function(tune_controller, trial, result, scheduler)``
for the trial's resources; if they differ from what it holds, the trial is
restarted from its latest checkpoint with them (the daemon re-admits it with
the new bundles; the trainable reads them from
``tune.get_context().get_trial_resources()`` and sizes its threads or devices).
As with Ray, the trainable must checkpoint to keep its progress: a trial with
no checkpoint yet starts again from scratch with its new resources.

``DistributeResources`` (the default) shares the daemon's CPUs and GPUs out
evenly among the live trials, in steps of each trial's base request (or
``increase_by``), never below the base: as trials finish, the rest grow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..resources import PlacementGroupFactory, to_bundles
from .trial_scheduler import FIFOScheduler, TrialScheduler

Allocation = list[dict[str, float]]


def _lower(bundle: Mapping[str, float]) -> dict[str, float]:
    return {k.lower(): float(v) for k, v in bundle.items()}


def _total(bundles: Allocation) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for key, value in _lower(bundle).items():
            total[key] = total.get(key, 0.0) + value
    return total


class DistributeResources:
    """Share CPUs and GPUs evenly among live trials, in multiples of each one's base."""

    def __init__(
        self,
        add_bundles: bool = False,
        increase_by: Mapping[str, float] | None = None,
        increase_by_times: int = -1,
        reserve_resources: Mapping[str, float] | None = None,
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        self.add_bundles = add_bundles
        self.increase_by = _lower(increase_by or {})
        self.increase_by_times = increase_by_times
        self.reserve_resources = _lower(reserve_resources or {})
        self.metric = metric
        self.mode = mode

    def __call__(
        self,
        tune_controller: Any,
        trial: Any,
        result: dict[str, Any],
        scheduler: ResourceChangingScheduler,
    ) -> Allocation | None:
        if result.get("training_iteration", 0) < 1:
            return None
        base = scheduler.base_resources(trial)
        capacity = _lower(getattr(tune_controller, "capacity", {}) or {})
        live = [t for t in tune_controller.get_trials() if t.status in ("PENDING", "RUNNING")]
        if not live or not capacity:
            return None
        new = dict(base)
        for key in ("cpu", "gpu"):
            unit = self.increase_by.get(key) or base.get(key, 0.0)
            if unit <= 0:
                continue
            free = capacity.get(key, 0.0) - self.reserve_resources.get(key, 0.0)
            share = free / len(live)
            steps = max(math.floor(share / unit + 1e-9), 0)
            if not self.increase_by:
                steps = max(steps, 1)  # never below the base request
            if self.increase_by_times >= 0:
                steps = min(steps, self.increase_by_times + (0 if self.increase_by else 1))
            grown = steps * unit + (base.get(key, 0.0) if self.increase_by else 0.0)
            new[key] = max(grown, base.get(key, 0.0))
        if self.add_bundles:
            unit_bundle = {k: v for k, v in base.items() if v}
            count = max(int(new.get("cpu", 0) // max(base.get("cpu", 1.0), 1e-9)), 1)
            return [dict(unit_bundle) for _ in range(count)]
        return [new]


class DistributeResourcesToTopJob(DistributeResources):
    """As ``DistributeResources``, but what is left over goes to the best trial by
    ``metric``: it gets twice its even share, the others their even share."""

    def __call__(
        self,
        tune_controller: Any,
        trial: Any,
        result: dict[str, Any],
        scheduler: ResourceChangingScheduler,
    ) -> Allocation | None:
        allocation = super().__call__(tune_controller, trial, result, scheduler)
        metric = self.metric or scheduler.metric
        mode = self.mode or scheduler.mode
        if allocation is None or not metric or not mode:
            return allocation
        live = [t for t in tune_controller.get_trials() if t.status in ("PENDING", "RUNNING")]
        scored: list[float] = []
        for t in live:
            v = (t.last_result or {}).get(metric)
            if isinstance(v, int | float):
                scored.append(float(v))
        value = result.get(metric)
        if not scored or not isinstance(value, int | float):
            return allocation
        best = max(scored) if mode == "max" else min(scored)
        if value != best or len(live) < 2:
            return allocation
        capacity = _lower(getattr(tune_controller, "capacity", {}) or {})
        top = dict(allocation[0])
        for key in ("cpu", "gpu"):
            others = (len(live) - 1) * top.get(key, 0.0)
            top[key] = max(top.get(key, 0.0), capacity.get(key, 0.0) - others)
        return [top]


class ResourceChangingScheduler(TrialScheduler):
    def __init__(
        self,
        base_scheduler: TrialScheduler | None = None,
        resources_allocation_function: Callable[..., Any] | None = None,
    ) -> None:
        self._base_scheduler = base_scheduler or FIFOScheduler()
        self._resources_allocation_function = (
            resources_allocation_function
            if resources_allocation_function is not None
            else DistributeResources()
        )
        self._base_resources: dict[str, dict[str, float]] = {}
        self._reallocated_trial_ids: set[str] = set()

    @property
    def metric(self) -> str | None:
        return self._base_scheduler.metric

    @property
    def mode(self) -> str | None:
        return self._base_scheduler.mode

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self._base_scheduler.set_search_properties(metric, mode, **spec)

    def base_resources(self, trial: Any) -> dict[str, float]:
        """What the trial asked for when it first ran: the unit allocations grow by."""
        return dict(self._base_resources.get(trial.trial_id) or _lower(trial.resources or {}))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._base_scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._base_scheduler.on_trial_error(tune_controller, trial)

    def on_trial_complete(
        self, tune_controller: Any, trial: Any, result: dict[str, Any] | None
    ) -> None:
        self._base_scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._base_scheduler.on_trial_remove(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.trial_id not in self._base_resources and trial.resources:
            self._base_resources[trial.trial_id] = _lower(trial.resources)
        decision = self._base_scheduler.on_trial_result(tune_controller, trial, result)
        if decision != self.CONTINUE:
            return decision
        new = self.reallocate_trial_resources_if_needed(tune_controller, trial, result)
        if new is None:
            return decision
        from ..result import TuneError

        try:
            tune_controller.restart_trial(trial, trial.config, trial.checkpoint, resources=new)
        except TuneError:  # it ended meanwhile (results reach us after the fact): no change
            return decision
        self._reallocated_trial_ids.add(trial.trial_id)
        return self.PAUSE

    def reallocate_trial_resources_if_needed(
        self, tune_controller: Any, trial: Any, result: dict[str, Any]
    ) -> Allocation | None:
        """The trial's new bundles, or None to leave it as it is."""
        if not trial.resources:
            return None  # not running
        # Without a checkpoint it starts again from scratch with its new bundles, as in
        # Ray (Ray's test_function_api.py testNewResources).
        raw = self._resources_allocation_function(tune_controller, trial, result, self)
        if raw is None:
            return None
        if isinstance(raw, PlacementGroupFactory):
            bundles = [dict(b) for b in raw.bundles]
        elif isinstance(raw, list):
            bundles = [dict(b) for b in raw]
        else:
            bundles = to_bundles(raw)
        held = {k: v for k, v in _lower(trial.resources).items() if k in ("cpu", "gpu") or v}
        wanted = _total(bundles)
        if all(math.isclose(wanted.get(k, 0.0), held.get(k, 0.0)) for k in set(wanted) | set(held)):
            return None
        return [_lower(b) for b in bundles]

    def debug_string(self) -> str:
        return (
            f"ResourceChangingScheduler over {type(self._base_scheduler).__name__}: "
            f"{len(self._reallocated_trial_ids)} trials given new resources"
        )
