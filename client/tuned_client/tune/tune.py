"""``tune.run`` and ``ExperimentAnalysis``: Ray Tune's older entry point, still in many scripts.

It builds the same Tuner the newer API does, so everything behaves alike; the
return value answers the questions old scripts ask (``best_config``,
``results_df``, ``get_best_trial``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from .resources import with_resources
from .result import Result, ResultGrid, TuneError
from .tuner import Tuner


@dataclass
class AnalysisTrial:
    """What ``analysis.trials`` holds: a finished trial as Ray's Trial shows it."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any]
    status: str
    path: str
    error: Exception | None

    @property
    def local_path(self) -> str:
        return self.path

    @property
    def logdir(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.trial_id


def _trial(result: Result) -> AnalysisTrial:
    return AnalysisTrial(
        trial_id=result.trial_id,
        config=dict(result.config or {}),
        last_result=dict(result.metrics or {}),
        status=result.status,
        path=result.path,
        error=result.error,
    )


class ExperimentAnalysis:
    """The results of ``tune.run`` (``ray.tune.ExperimentAnalysis``)."""

    def __init__(self, grid: ResultGrid, metric: str | None, mode: str | None) -> None:
        self.result_grid = grid
        self.default_metric = metric
        self.default_mode = mode
        self.trials = [_trial(r) for r in grid]
        self.experiment_path = grid.experiment_path

    def _best(self, metric: str | None, mode: str | None, scope: str = "last") -> Result:
        return self.result_grid.get_best_result(
            metric or self.default_metric, mode or self.default_mode, scope=scope
        )

    def get_best_trial(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> AnalysisTrial:
        return _trial(self._best(metric, mode, scope))

    def get_best_config(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> dict[str, Any]:
        return dict(self._best(metric, mode, scope).config or {})

    @property
    def best_trial(self) -> AnalysisTrial:
        return self.get_best_trial()

    @property
    def best_config(self) -> dict[str, Any]:
        return self.get_best_config()

    @property
    def best_result(self) -> dict[str, Any]:
        return dict(self._best(None, None).metrics or {})

    @property
    def best_logdir(self) -> str:
        return self._best(None, None).path

    @property
    def best_checkpoint(self) -> Any:
        return self._best(None, None).checkpoint

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return {t.trial_id: t.last_result for t in self.trials}

    @property
    def results_df(self) -> Any:
        return self.result_grid.get_dataframe()

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> Any:
        return self.result_grid.get_dataframe(metric, mode)


def run(
    run_or_experiment: Any,
    *,
    name: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    stop: Any = None,
    time_budget_s: float | None = None,
    config: dict[str, Any] | None = None,
    resources_per_trial: Any = None,
    num_samples: int = 1,
    storage_path: str | None = None,
    local_dir: str | None = None,
    search_alg: Any = None,
    scheduler: Any = None,
    checkpoint_config: CheckpointConfig | None = None,
    verbose: int | None = None,
    callbacks: list[Any] | None = None,
    max_failures: int = 0,
    fail_fast: bool = False,
    max_concurrent_trials: int | None = None,
    raise_on_failed_trial: bool = True,
    **ignored: Any,
) -> ExperimentAnalysis:
    """Run an experiment the way ``ray.tune.run`` does; raise if a trial failed."""
    trainable = run_or_experiment
    if resources_per_trial is not None:
        trainable = with_resources(trainable, resources_per_trial)
    tuner = Tuner(
        trainable,
        param_space=config or {},
        tune_config=TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent_trials,
            time_budget_s=time_budget_s,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path or local_dir,
            stop=stop,
            verbose=verbose,
            callbacks=callbacks,
            checkpoint_config=checkpoint_config,
            failure_config=FailureConfig(max_failures=max_failures, fail_fast=fail_fast),
        ),
    )
    grid = tuner.fit()
    if raise_on_failed_trial and grid.num_errors:
        failed = [r.trial_id for r in grid if r.error is not None]
        raise TuneError(f"Trials did not complete: {failed}")
    return ExperimentAnalysis(grid, metric, mode)
