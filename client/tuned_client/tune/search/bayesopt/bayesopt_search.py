"""``BayesOptSearch``: a Gaussian process over continuous parameters (``bayes_opt``).

As Ray's: the space is floats only (bounds; a sampler other than uniform is
dropped with a warning); the first ``random_search_steps`` results are
buffered and registered together, so the GP is not fitted to one point;
a config seen before is skipped (``skip_duplicate``), and ``patience`` ends the
search once one config has come back that often. Uses ``bayes_opt`` 1.x's
``UtilityFunction`` (``utility_kwargs``: ``kind``, ``kappa``, ``xi``), the API
Ray's wrapper is written against.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from ..sample import Float, Uniform
from ..searcher import Searcher
from ..space_searcher import SpaceSearcher, finite, need

log = logging.getLogger("tuned_client")


def _byo() -> Any:
    return need("bayes_opt", "BayesOptSearch", "bayesopt", "'bayesian-optimization<2'")


class BayesOptSearch(SpaceSearcher):
    NAME = "BayesOpt"

    def __init__(
        self,
        space: dict[str, Any] | None = None,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        utility_kwargs: dict[str, Any] | None = None,
        random_state: int = 42,
        random_search_steps: int = 10,
        verbose: int = 0,
        patience: int = 5,
        skip_duplicate: bool = True,
    ) -> None:
        _byo()
        self._utility_kwargs = {"kind": "ucb", "kappa": 2.576, "xi": 0.0, **(utility_kwargs or {})}
        self._random_state = random_state
        self._random_search_trials = random_search_steps
        self._total_random_search_trials = 0
        self._verbose = verbose
        self._patience = patience
        self._skip_duplicate = skip_duplicate
        self._live: dict[str, dict[str, float]] = {}
        self._buffered: list[tuple[dict[str, float], dict[str, Any]]] = []
        self._seen: Counter[tuple[tuple[str, float], ...]] = Counter()
        self.optimizer: Any = None
        super().__init__(space, metric, mode, points_to_evaluate)

    @staticmethod
    def convert_search_space(spec: dict[str, Any], join: bool = False) -> dict[str, Any]:
        """A tune space as ``bayes_opt`` bounds: ``{"a/b": (lower, upper)}``."""
        from ..space_searcher import split_space

        domains, _ = split_space(spec, "BayesOpt")
        return {name: _bounds(name, d) for name, d in domains.items()}

    def _is_native(self, space: Any) -> bool:
        return isinstance(space, dict) and all(
            isinstance(v, tuple) and len(v) == 2 for v in space.values()
        )

    def _convert(self, domains: dict[str, Any]) -> dict[str, tuple[float, float]]:
        return {name: _bounds(name, d) for name, d in domains.items()}

    def _setup(self) -> None:
        byo = _byo()
        self.optimizer = byo.BayesianOptimization(
            f=None, pbounds=self._space, verbose=self._verbose, random_state=self._random_state
        )
        self.utility = byo.UtilityFunction(**self._utility_kwargs)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._require_ready()
        if self._points:
            config = {k: float(v) for k, v in self._points.pop(0).items()}
        else:
            config = {k: float(v) for k, v in self.optimizer.suggest(self.utility).items()}
        key = tuple(sorted((k, round(float(v), 5)) for k, v in config.items()))
        already_seen = key in self._seen
        self._seen[key] += 1
        if self._patience is not None and max(self._seen.values()) > self._patience:
            return Searcher.FINISHED
        if already_seen and self._skip_duplicate:
            log.info("Skipping duplicated config: %s.", config)
            return None
        if len(self._buffered) < self._random_search_trials:
            if self._total_random_search_trials == self._random_search_trials:
                return None  # wait for the random phase's results before the GP
            self._total_random_search_trials += 1
        self._live[trial_id] = config
        return self._config(config)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        params = self._live.pop(trial_id, None)
        if params is None or result is None or error:
            return
        if len(self._buffered) >= self._random_search_trials:
            self._register(params, result)
            return
        self._buffered.append((params, result))
        if len(self._buffered) == self._random_search_trials:
            for p, r in self._buffered:
                self._register(p, r)

    def _register(self, params: dict[str, float], result: dict[str, Any]) -> None:
        value: Any = result.get(str(self._metric))
        if finite(value):
            self.optimizer.register(params, self.metric_op * float(value))

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        if not error and not pruned:
            self.optimizer.register(parameters, self.metric_op * value)


def _bounds(name: str, domain: Any) -> tuple[float, float]:
    if not isinstance(domain, Float):
        raise ValueError(
            f"BayesOpt does not support parameters of type `{type(domain).__name__}` ({name})"
        )
    sampler = domain.get_sampler()
    if not isinstance(sampler, Uniform):
        log.warning(
            "BayesOpt does not support specific sampling methods. The %s sampler will be "
            "dropped.",
            sampler,
        )
    return (domain.lower, domain.upper)
