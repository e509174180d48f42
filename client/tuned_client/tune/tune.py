"""``tune.run``: Ray Tune's older entry point, still in many scripts.

It builds the same Tuner the newer API does, so everything behaves alike; the
return value answers the questions old scripts ask (``best_config``,
``results_df``, ``get_best_trial``).
"""

from __future__ import annotations

from typing import Any

from .analysis.experiment_analysis import ExperimentAnalysis
from .config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from .resources import with_resources
from .result import TuneError
from .tuner import Tuner


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
    return ExperimentAnalysis(grid, default_metric=metric, default_mode=mode)
