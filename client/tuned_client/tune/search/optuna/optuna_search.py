"""``OptunaSearch``: Optuna's samplers (TPE by default) through its ask/tell interface.

The space is ours (``tune.uniform`` ...; nested dicts become ``"a/b"`` names, as
in Ray), Optuna's own distributions, or a define-by-run function taking an
Optuna trial. Optuna is an optional extra: ``pip install tuned[optuna]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..sample import Categorical, Domain, Float, Integer, LogUniform, Quantized, Uniform
from ..searcher import Searcher
from ..space_searcher import flatten as _flatten
from ..space_searcher import unflatten as _unflatten


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise ImportError(
            "OptunaSearch needs Optuna: pip install optuna (or tuned[optuna])"
        ) from exc
    return optuna


def convert_search_space(space: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Optuna distributions by flat name, constants by flat name) from a tune space."""
    ot = _optuna()
    dists: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    for name, domain in _flatten(space).items():
        if isinstance(domain, dict) and "grid_search" in domain:
            raise ValueError(
                f"{name}: grid search parameters cannot be converted to an Optuna search space"
            )
        if isinstance(domain, ot.distributions.BaseDistribution):
            dists[name] = domain
            continue
        if not isinstance(domain, Domain):
            constants[name] = domain
            continue
        sampler = domain.get_sampler()
        q = None
        if isinstance(sampler, Quantized):
            q = sampler.q
            sampler = sampler.get_sampler()
        if isinstance(domain, Float) and isinstance(sampler, LogUniform | Uniform):
            log = isinstance(sampler, LogUniform)
            dists[name] = ot.distributions.FloatDistribution(
                domain.lower, domain.upper, log=log, step=None if log else q
            )
        elif isinstance(domain, Integer) and isinstance(sampler, LogUniform | Uniform):
            # randint excludes its upper bound; quantized ones include it (as Ray).
            upper = int(domain.upper) - (0 if q else 1)
            log = isinstance(sampler, LogUniform)
            dists[name] = ot.distributions.IntDistribution(
                int(domain.lower), upper, log=log, step=1 if log else int(q or 1)
            )
        elif isinstance(domain, Categorical) and isinstance(sampler, Uniform):
            dists[name] = ot.distributions.CategoricalDistribution(domain.categories)
        else:
            raise ValueError(
                f"{name}: Optuna cannot sample {type(domain).__name__} with {sampler} "
                "(use uniform, loguniform, randint, choice or their quantized forms)"
            )
    return dists, constants


class OptunaSearch(Searcher):
    def __init__(
        self,
        space: dict[str, Any] | Callable[[Any], dict[str, Any] | None] | None = None,
        metric: str | list[str] | None = None,
        mode: str | list[str] | None = None,
        points_to_evaluate: list[dict[str, Any]] | None = None,
        sampler: Any = None,
        seed: int | None = None,
        evaluated_rewards: list[float] | None = None,
    ) -> None:
        _optuna()
        super().__init__(metric=metric, mode=mode)
        self._space: dict[str, Any] | Callable[[Any], dict[str, Any] | None] | None = None
        self._dists: dict[str, Any] = {}
        self._constants: dict[str, Any] = {}
        if callable(space):
            self._space = space
        elif space:
            self._set_space(space)
        self._points = list(points_to_evaluate or [])
        self._rewards = list(evaluated_rewards or [])
        self._sampler = sampler
        self._seed = seed
        self._study: Any = None
        self._ot_trials: dict[str, Any] = {}
        if self._space is not None and self._metric and self._mode:
            self._setup_study()

    def _set_space(self, space: dict[str, Any]) -> None:
        self._space = space
        self._dists, self._constants = convert_search_space(space)

    @staticmethod
    def convert_search_space(spec: dict[str, Any]) -> dict[str, Any]:
        """A tune space as Optuna distributions by flat name (``"a/b"``), as Ray's."""
        return convert_search_space(spec)[0]

    def set_search_properties(
        self, metric: Any, mode: Any, config: dict[str, Any], **spec: Any
    ) -> bool:
        """False once it has a space of its own (as Ray's searchers): the Tuner then refuses
        a param_space that still holds search domains."""
        if self._space is not None:
            return False
        self._set_space(config)
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        self._setup_study()
        return True

    def _setup_study(self) -> None:
        ot = _optuna()
        if not self._metric or not self._mode:
            raise ValueError("OptunaSearch needs a metric and a mode")
        ot.logging.set_verbosity(ot.logging.WARNING)
        sampler = self._sampler or ot.samplers.TPESampler(seed=self._seed)
        modes = self._mode if isinstance(self._mode, list) else [self._mode]
        directions = ["minimize" if m == "min" else "maximize" for m in modes]
        self._study = ot.create_study(sampler=sampler, directions=directions)
        for i, point in enumerate(self._points):
            flat = _flatten(point)
            if i < len(self._rewards):
                self._study.add_trial(
                    ot.trial.create_trial(
                        params=flat,
                        distributions={k: self._dists[k] for k in flat if k in self._dists},
                        value=self._rewards[i],
                    )
                )
            else:
                self._study.enqueue_trial(flat)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._study is None:
            raise RuntimeError(
                "OptunaSearch has no space or no metric/mode: give space= or a Tuner "
                "param_space, and metric/mode here or in TuneConfig"
            )
        if callable(self._space):
            ot_trial = self._study.ask()
            extra = self._space(ot_trial) or {}
            flat = {**ot_trial.params, **_flatten(extra)}
        else:
            ot_trial = self._study.ask(fixed_distributions=self._dists)
            flat = {**self._constants, **ot_trial.params}
        self._ot_trials[trial_id] = ot_trial
        return _unflatten(flat)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self._metric, list):
            return  # Optuna takes no intermediate values for several objectives
        ot_trial = self._ot_trials.get(trial_id)
        value = result.get(self._metric or "")
        step = result.get("training_iteration")
        if ot_trial is not None and isinstance(value, int | float) and isinstance(step, int):
            ot_trial.report(float(value), step)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        ot = _optuna()
        ot_trial = self._ot_trials.pop(trial_id, None)
        if ot_trial is None:
            return
        metrics = self._metric if isinstance(self._metric, list) else [self._metric or ""]
        values = [(result or {}).get(m) for m in metrics]
        if all(isinstance(v, int | float) for v in values) and not error:
            told = [float(v) for v in values]  # type: ignore[arg-type]
            self._study.tell(ot_trial, told if len(told) > 1 else told[0])
        else:
            state = ot.trial.TrialState.FAIL if error else ot.trial.TrialState.PRUNED
            self._study.tell(ot_trial, None, state=state)

    def add_evaluated_point(
        self,
        parameters: dict[str, Any],
        value: float,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: list[float] | None = None,
    ) -> None:
        ot = _optuna()
        flat = _flatten(parameters)
        state = ot.trial.TrialState.COMPLETE
        if error:
            state = ot.trial.TrialState.FAIL
        elif pruned:
            state = ot.trial.TrialState.PRUNED
        self._study.add_trial(
            ot.trial.create_trial(
                params=flat,
                distributions={k: self._dists[k] for k in flat if k in self._dists},
                value=None if state != ot.trial.TrialState.COMPLETE else value,
                state=state,
                intermediate_values=dict(enumerate(intermediate_values or [])),
            )
        )
