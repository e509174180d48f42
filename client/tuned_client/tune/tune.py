"""``tune.run``: Ray Tune's older entry point, still in many scripts.

It builds the same Tuner the newer API does, so everything behaves alike; the
return value answers the questions old scripts ask (``best_config``,
``results_df``, ``get_best_trial``). Every keyword of Ray 2.x's ``tune.run`` is
either passed on (to ``TuneConfig``/``RunConfig``, which honour or refuse it)
or refused here with Ray's error; none is ignored. ``resume=`` continues the
experiment in the named folder with ``Tuner.restore``, as Ray does.
"""

from __future__ import annotations

import os
from typing import Any

from ..paths import default_storage_path
from .analysis.experiment_analysis import ExperimentAnalysis
from .config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from .fit_settings import trainable_name
from .resources import with_resources
from .result import TuneError
from .tuner import Tuner

# Ray 2.x's resume strings: what Tuner.restore is told for each.
_RESUME = {
    "AUTO": {},
    "AUTO+ERRORED": {"resume_errored": True},
    "AUTO+RESTART_ERRORED": {"restart_errored": True},
    "AUTO+ERRORED_ONLY": {"resume_unfinished": False, "resume_errored": True},
    "AUTO+RESTART_ERRORED_ONLY": {"resume_unfinished": False, "restart_errored": True},
}


def _resume_flags(resume: Any) -> dict[str, bool] | None:
    """Tuner.restore's flags for ``resume=``; None to start afresh."""
    if resume in (None, False):
        return None
    text = "AUTO" if resume is True else str(resume).upper()
    if text in ("ERRORED_ONLY", "RESTART_ERRORED_ONLY"):  # Ray 1.x's spelling
        text = f"AUTO+{text}"
    base, plus, extra = text.partition("+")
    key = f"AUTO{plus}{extra}" if base in ("AUTO", "LOCAL", "REMOTE") else text
    if key not in _RESUME:
        raise ValueError(
            f"resume={resume!r} is not one of Ray's: True, 'AUTO', 'AUTO+ERRORED', "
            "'AUTO+RESTART_ERRORED', 'AUTO+ERRORED_ONLY', 'AUTO+RESTART_ERRORED_ONLY'"
        )
    return {k: bool(v) for k, v in _RESUME[key].items()}


def _checkpoint_config(
    checkpoint_config: CheckpointConfig | None, legacy: dict[str, Any]
) -> CheckpointConfig | None:
    """Ray's older checkpoint keywords, as Ray 2.x refuses them beside a CheckpointConfig."""
    given = {k: v for k, v in legacy.items() if v not in (None, 0, False)}
    if not given:
        return checkpoint_config
    if checkpoint_config is not None:
        raise ValueError(
            "You passed `checkpoint_config` and at least one of `keep_checkpoints_num`, "
            "`checkpoint_score_attr`, `checkpoint_freq`, `checkpoint_at_end`: pass only "
            "`checkpoint_config`."
        )
    attr = given.get("checkpoint_score_attr")
    order = "max"
    if isinstance(attr, str) and attr.startswith("min-"):
        attr, order = attr[4:], "min"
    return CheckpointConfig(
        num_to_keep=given.get("keep_checkpoints_num"),
        checkpoint_score_attribute=attr,
        checkpoint_score_order=order,
        checkpoint_frequency=int(given.get("checkpoint_freq", 0)),
        checkpoint_at_end=given.get("checkpoint_at_end"),
    )


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
    storage_filesystem: Any = None,
    search_alg: Any = None,
    scheduler: Any = None,
    checkpoint_config: CheckpointConfig | None = None,
    verbose: int | None = None,
    progress_reporter: Any = None,
    log_to_file: Any = False,
    trial_name_creator: Any = None,
    trial_dirname_creator: Any = None,
    sync_config: Any = None,
    export_formats: Any = None,
    max_failures: int = 0,
    fail_fast: bool | str = False,
    restore: str | None = None,
    resume: Any = None,
    reuse_actors: bool = False,
    raise_on_failed_trial: bool = True,
    callbacks: list[Any] | None = None,
    max_concurrent_trials: int | None = None,
    keep_checkpoints_num: int | None = None,
    checkpoint_score_attr: str | None = None,
    checkpoint_freq: int = 0,
    checkpoint_at_end: bool = False,
    local_dir: str | None = None,
) -> ExperimentAnalysis:
    """Run an experiment the way ``ray.tune.run`` does; raise if a trial failed."""
    if export_formats:
        raise TuneError(
            "tune.run(export_formats=...) is not supported: a trial's checkpoints are the "
            "folders it reports with tune.report(..., checkpoint=...)"
        )
    if restore is not None:
        raise TuneError(
            "tune.run(restore=<checkpoint>) is not supported: resume an experiment with "
            "resume='AUTO' (or Tuner.restore), or have the trainable load the checkpoint"
        )
    if config is not None and not isinstance(config, dict):
        raise ValueError(
            f"The `config` passed to `tune.run()` must be a dict. Got '{type(config)}' instead."
        )
    trainable = run_or_experiment
    if resources_per_trial is not None:
        trainable = with_resources(trainable, resources_per_trial)
    tune_config = TuneConfig(
        metric=metric,
        mode=mode,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent_trials,
        time_budget_s=time_budget_s,
        reuse_actors=reuse_actors,
        trial_name_creator=trial_name_creator,
        trial_dirname_creator=trial_dirname_creator,
    )
    run_config = RunConfig(
        name=name,
        storage_path=storage_path or local_dir,
        storage_filesystem=storage_filesystem,
        stop=stop,
        verbose=verbose,
        callbacks=callbacks,
        checkpoint_config=_checkpoint_config(
            checkpoint_config,
            {
                "keep_checkpoints_num": keep_checkpoints_num,
                "checkpoint_score_attr": checkpoint_score_attr,
                "checkpoint_freq": checkpoint_freq,
                "checkpoint_at_end": checkpoint_at_end,
            },
        ),
        failure_config=FailureConfig(max_failures=max_failures, fail_fast=fail_fast),
        progress_reporter=progress_reporter,
        log_to_file=log_to_file,
        sync_config=sync_config,
    )
    flags = _resume_flags(resume)
    folder = os.path.join(
        os.path.expanduser(run_config.storage_path or str(default_storage_path())),
        name or trainable_name(trainable),
    )
    if flags is not None and name and Tuner.can_restore(folder):
        tuner = Tuner.restore(
            folder,
            trainable,
            param_space=config,
            tune_config=tune_config,
            run_config=run_config,
            resume_unfinished=flags.get("resume_unfinished", True),
            resume_errored=flags.get("resume_errored", False),
            restart_errored=flags.get("restart_errored", False),
        )
    else:  # Ray's "AUTO": a new experiment when there is none to resume
        tuner = Tuner(trainable, param_space=config or {}, tune_config=tune_config,
                      run_config=run_config)  # fmt: skip
    grid = tuner.fit()
    if raise_on_failed_trial and grid.num_errors:
        failed = [r.trial_id for r in grid if r.error is not None]
        raise TuneError(f"Trials did not complete: {failed}")
    return ExperimentAnalysis(grid, default_metric=metric, default_mode=mode)
