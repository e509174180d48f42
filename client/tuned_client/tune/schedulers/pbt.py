"""``PopulationBasedTraining``: exploit better trials' checkpoints, explore their configs.

As Ray's asynchronous PBT with function trainables: every
``perturbation_interval`` (in ``time_attr`` units) a trial's latest score is
ranked; a trial in the bottom ``quantile_fraction`` is restarted from the
latest checkpoint of a trial drawn from the top quantile, with that trial's
config perturbed (``explore``). The daemon copies the donor's checkpoint into
the trial's own folder and runs the trial again from it with the new config,
which is what Ray does by pausing the trial and restoring it.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..search.sample import Categorical, Domain, Float, Integer
from .trial_scheduler import FIFOScheduler, metric_value


@dataclass
class _State:
    last_score: float | None = None
    last_perturbation_time: float = 0.0
    last_train_time: float = 0.0


def explore(
    config: dict[str, Any],
    mutations: Mapping[str, Any],
    resample_probability: float,
    perturbation_factors: tuple[float, float],
    custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None,
    rng: random.Random,
) -> dict[str, Any]:
    """A perturbed copy of ``config`` (Ray's rules: resample, shift in a list, or scale)."""
    new = copy.deepcopy(config)
    for key, spec in mutations.items():
        if isinstance(spec, Mapping):
            if not isinstance(config.get(key), dict):
                raise ValueError(f"hyperparam_mutations[{key!r}] is nested but the config is not")
            new[key] = explore(
                config[key], spec, resample_probability, perturbation_factors, None, rng
            )
            continue
        current = config.get(key)
        if isinstance(spec, Categorical):
            spec = list(spec.categories)
        if isinstance(spec, list | tuple):
            values = list(spec)
            if rng.random() < resample_probability or current not in values:
                new[key] = rng.choice(values)
            else:
                shift = rng.choice([-1, 1])
                index = min(max(values.index(current) + shift, 0), len(values) - 1)
                new[key] = values[index]
        elif isinstance(spec, Domain) or callable(spec):
            draw: Callable[[], Any] = spec.sample if isinstance(spec, Domain) else spec
            if rng.random() < resample_probability or not isinstance(current, int | float):
                new[key] = draw()
            else:
                value = current * rng.choice(perturbation_factors)
                if isinstance(spec, Float | Integer):
                    value = min(max(value, spec.lower), spec.upper)
                new[key] = int(value) if isinstance(current, int) else value
        else:
            raise TypeError(
                f"hyperparam_mutations[{key!r}] must be a list, a tune search space or a "
                f"function, got {type(spec).__name__}"
            )
    if custom_explore_fn is not None:
        new = custom_explore_fn(new)
        if new is None:
            raise ValueError("custom_explore_fn must return the new config")
    return new


class PopulationBasedTraining(FIFOScheduler):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        burn_in_period: float = 0.0,
        hyperparam_mutations: Mapping[str, Any] | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: tuple[float, float] = (1.2, 0.8),
        custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
        seed: int | None = None,
    ) -> None:
        if not hyperparam_mutations and custom_explore_fn is None:
            from ..result import TuneError

            raise TuneError(  # as Ray's
                "You must specify at least one of `hyperparam_mutations` "
                "or `custom_explore_fn` to use PBT."
            )
        if not 0 <= quantile_fraction <= 0.5:
            raise ValueError("quantile_fraction must be between 0 and 0.5")
        if perturbation_interval <= 0:
            raise ValueError("perturbation_interval must be positive")
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._time_attr = time_attr
        self._metric = metric
        self._mode = mode
        self._perturbation_interval = perturbation_interval
        self._burn_in_period = burn_in_period
        self._mutations = dict(hyperparam_mutations or {})
        self._quantile_fraction = quantile_fraction
        self._resample_probability = resample_probability
        self._perturbation_factors = perturbation_factors
        self._custom_explore_fn = custom_explore_fn
        self._require_attrs = require_attrs
        self._rng = random.Random(seed)
        self._state: dict[str, _State] = {}
        self._trials: dict[str, Any] = {}
        self._num_perturbations = 0

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._require_metric()
        self._state[trial.trial_id] = _State()
        self._trials[trial.trial_id] = trial

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        metric, mode = self._require_metric()
        if trial.trial_id not in self._state:
            self.on_trial_add(tune_controller, trial)
        score = metric_value(result, metric, mode)
        if self._time_attr not in result or score is None:
            if self._require_attrs:
                raise ValueError(
                    f"PopulationBasedTraining needs {self._time_attr!r} and {metric!r} in "
                    f"every result; got {sorted(result)}"
                )
            return self.CONTINUE
        now = float(result[self._time_attr])
        state = self._state[trial.trial_id]
        state.last_score = score
        if now - state.last_perturbation_time < self._perturbation_interval:
            return self.CONTINUE
        if now < self._burn_in_period:
            return self.CONTINUE
        state.last_perturbation_time = now
        state.last_train_time = now
        lower, upper = self._quantiles()
        if trial.trial_id not in lower:
            return self.CONTINUE
        donors = [tid for tid in upper if self._trials[tid].checkpoint]
        if not donors:
            return self.CONTINUE
        donor_id = self._rng.choice(donors)
        donor = self._trials[donor_id]
        new_config = explore(
            donor.config,
            self._mutations,
            self._resample_probability,
            self._perturbation_factors,
            self._custom_explore_fn,
            self._rng,
        )
        from ..result import TuneError

        try:
            tune_controller.restart_trial(trial, new_config, donor.checkpoint)
        except TuneError:  # the trial ended before its result reached us: nothing to exploit
            return self.CONTINUE
        donor_state = self._state[donor_id]
        state.last_score = donor_state.last_score
        state.last_perturbation_time = donor_state.last_perturbation_time
        state.last_train_time = donor_state.last_train_time
        self._num_perturbations += 1
        return self.PAUSE

    def _quantiles(self) -> tuple[list[str], list[str]]:
        """(bottom, top) trial ids by latest score, each ``quantile_fraction`` of the live."""
        scored = sorted(
            (
                (s.last_score, tid)
                for tid, s in self._state.items()
                if s.last_score is not None and self._trials[tid].status in ("RUNNING", "PENDING")
            ),
        )
        if len(scored) <= 1:
            return [], []
        count = math.ceil(len(scored) * self._quantile_fraction)
        if count > len(scored) / 2:
            count = math.floor(len(scored) / 2)
        ids = [tid for _, tid in scored]
        return ids[:count], ids[-count:] if count else []

    def on_trial_complete(
        self, tune_controller: Any, trial: Any, result: dict[str, Any] | None
    ) -> None:
        self._state.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._state.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"PopulationBasedTraining: {self._num_perturbations} checkpoints, perturbations"
