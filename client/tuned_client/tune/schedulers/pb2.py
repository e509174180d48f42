"""``PB2``: Population Based Bandits, PBT whose explore step is a Gaussian process bandit.

As Ray's (Parker-Holder et al., 2020): every result records how much the
trial's score changed since its last result, with the time and the trial's
(bounds-normalised) hyperparameters; when PBT exploits, the new config is
the donor's with each ``hyperparam_bounds`` parameter chosen by GP-UCB on
that data at the latest time, instead of a random perturbation. The GP is
GPy's (the ``pb2`` extra: ``GPy``, ``scikit-learn``), as in Ray; its kernel
here is a squared exponential over time and parameters (Ray's is a
time-varying kernel of its own), and the acquisition is maximised over
random candidates. Until there are two observations the choice is uniform.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from .pbt import PopulationBasedTraining
from .trial_scheduler import metric_value

CANDIDATES = 1000
MAX_ROWS = 500  # the GP's data, the latest kept: its cost grows with the cube


def _gpy() -> Any:
    from ..search.space_searcher import need

    return need("GPy", "PB2", "pb2", "GPy")


class PB2(PopulationBasedTraining):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        hyperparam_bounds: Mapping[str, Any] | None = None,
        quantile_fraction: float = 0.25,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
        custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int | None = None,
        kappa: float = 2.0,
    ) -> None:
        _gpy()
        if not hyperparam_bounds:
            raise ValueError("`hyperparam_bounds` must be specified to use PB2 scheduler.")
        self._bounds = _flat_bounds(hyperparam_bounds)
        self._user_explore = custom_explore_fn
        self._kappa = kappa
        self._rows: list[tuple[float, list[float], float]] = []
        self._last: dict[str, tuple[float, float]] = {}  # trial -> (time, score)
        super().__init__(
            time_attr=time_attr,
            metric=metric,
            mode=mode,
            perturbation_interval=perturbation_interval,
            hyperparam_mutations={},
            quantile_fraction=quantile_fraction,
            resample_probability=0.0,
            custom_explore_fn=self._explore,
            log_config=log_config,
            require_attrs=require_attrs,
            synch=synch,
            seed=seed,
        )

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        metric, mode = self._require_metric()
        score = metric_value(result, metric, mode)
        now = result.get(self._time_attr)
        if score is not None and isinstance(now, int | float):
            last = self._last.get(trial.trial_id)
            if last is not None and now > last[0]:
                self._rows.append((float(now), self._normalised(trial.config), score - last[1]))
                del self._rows[:-MAX_ROWS]
            self._last[trial.trial_id] = (float(now), score)
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.PAUSE:
            self._last.pop(trial.trial_id, None)  # it restarts from the donor's state
        return decision

    def _normalised(self, config: Mapping[str, Any]) -> list[float]:
        out = []
        for name, (low, high) in self._bounds.items():
            value = _lookup(config, name)
            span = high - low
            out.append((float(value) - low) / span if span and value is not None else 0.5)
        return out

    def _explore(self, config: dict[str, Any]) -> dict[str, Any]:
        chosen = self._select()
        new = dict(config)
        for (name, (low, high)), x in zip(self._bounds.items(), chosen, strict=True):
            value: float | int = low + x * (high - low)
            if isinstance(_lookup(config, name), int) and not isinstance(low, float):
                value = round(value)
            _assign(new, name, value)
        return self._user_explore(new) if self._user_explore else new

    def _select(self) -> list[float]:
        """The normalised parameters maximising UCB at the latest time (uniform at first)."""
        dims = len(self._bounds)
        candidates = [[self._rng.random() for _ in range(dims)] for _ in range(CANDIDATES)]
        if len(self._rows) < 2:
            return candidates[0]
        import numpy as np

        gpy = _gpy()
        times = np.array([r[0] for r in self._rows])
        t_low, t_span = times.min(), max(times.max() - times.min(), 1e-9)
        x = np.array([[(r[0] - t_low) / t_span, *r[1]] for r in self._rows])
        y = np.array([[r[2]] for r in self._rows])
        y = (y - y.mean()) / (y.std() or 1.0)
        model = gpy.models.GPRegression(x, y, gpy.kern.RBF(input_dim=dims + 1, ARD=True))
        model.Gaussian_noise.variance.constrain_bounded(1e-6, 10.0, warning=False)
        # an ill-conditioned fit: the prior's UCB still ranks the candidates
        with contextlib.suppress(np.linalg.LinAlgError, ValueError):
            model.optimize(messages=False, max_iters=200)
        grid = np.array([[1.0, *c] for c in candidates])
        mean, var = model.predict(grid)
        ucb = mean[:, 0] + self._kappa * np.sqrt(np.maximum(var[:, 0], 0.0))
        return candidates[int(np.argmax(ucb))]

    def debug_string(self) -> str:
        return f"PB2: {self._num_perturbations} perturbations, {len(self._rows)} observations"


def _flat_bounds(bounds: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for key, value in bounds.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_bounds(value, name + "/"))
            continue
        low, high = value
        if not (isinstance(low, int | float) and isinstance(high, int | float)) or high < low:
            raise ValueError(f"hyperparam_bounds[{name!r}] must be [low, high], got {value!r}")
        out[name] = (low, high)
    return out


def _lookup(config: Mapping[str, Any], name: str) -> Any:
    node: Any = config
    for part in name.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _assign(config: dict[str, Any], name: str, value: Any) -> None:
    *parents, leaf = name.split("/")
    node = config
    for part in parents:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[leaf] = value


__all__ = ["PB2"]
