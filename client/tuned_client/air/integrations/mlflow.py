"""``ray.air.integrations.mlflow``: ``MLflowLoggerCallback`` and ``setup_mlflow``, as Ray's.

``MLflowLoggerCallback`` runs in the script: a run per trial (named after the
trial, tagged ``trial_name``), its config as params (at the start, or at the
end with ``log_params_on_trial_end``), each result's numeric metrics at step
``timesteps_total`` or ``training_iteration``, the trial folder as artifacts
with ``save_artifact``, and the run ended ``FINISHED`` or ``FAILED``.
``setup_mlflow(config, ...)`` runs inside a trainable: it starts a run (by
default in the experiment named after the trial) and returns the ``mlflow``
module. Needs ``mlflow`` (or ``mlflow-skinny``): the ``tuned[mlflow]`` extra.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from ...session import current_session
from ...tune.logger.logger import LoggerCallback
from .._internal.mlflow import _MLflowLoggerUtil

logger = logging.getLogger(__name__)


class _NoopModule:
    """What non-zero ranks get from ``setup_mlflow`` in Ray Train (every call does nothing)."""

    def __getattr__(self, item: str) -> _NoopModule:
        return _NoopModule()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None


def _mlflow_or_raise() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "mlflow was not found - please install with `pip install mlflow`"
        ) from None


def setup_mlflow(
    config: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    experiment_id: str | None = None,
    experiment_name: str | None = None,
    tracking_token: str | None = None,
    artifact_location: str | None = None,
    run_name: str | None = None,
    create_experiment_if_not_exists: bool = False,
    tags: dict[str, Any] | None = None,
    rank_zero_only: bool = True,
) -> ModuleType | _NoopModule:
    """Set up an MLflow session inside a trainable and return the ``mlflow`` module.

    By default the MLflow experiment id is the trial id and its name the
    trial name (Ray's defaults; an experiment of that name must exist unless
    ``create_experiment_if_not_exists``). ``config`` is logged as the run's
    params. A trial here is one process, so ``rank_zero_only`` changes nothing.
    """
    _mlflow_or_raise()
    session = current_session()
    default_trial_id = session.assignment.trial_id if session is not None else None
    default_trial_name = session.assignment.trial_name if session is not None else None

    experiment_id = experiment_id or default_trial_id
    experiment_name = experiment_name or default_trial_name
    mlflow_util = _MLflowLoggerUtil()
    mlflow_util.setup_mlflow(
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        experiment_id=experiment_id,
        experiment_name=experiment_name,
        tracking_token=tracking_token,
        artifact_location=artifact_location,
        create_experiment_if_not_exists=create_experiment_if_not_exists,
    )
    mlflow_util.start_run(run_name=run_name or experiment_name, tags=tags, set_active=True)
    mlflow_util.log_params(dict(config or {}))
    module: ModuleType = mlflow_util._mlflow
    return module


class MLflowLoggerCallback(LoggerCallback):
    """MLflow logger: each trial's config, metrics and (optionally) folder, as Ray's.

    The callback runs in the script (the driver), not in the trainable: use
    ``setup_mlflow`` inside the trainable to log more there.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        registry_uri: str | None = None,
        experiment_name: str | None = None,
        tags: dict[str, Any] | None = None,
        tracking_token: str | None = None,
        save_artifact: bool = False,
        log_params_on_trial_end: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.experiment_name = experiment_name
        self.tags = tags
        self.tracking_token = tracking_token
        self.should_save_artifact = save_artifact
        self.log_params_on_trial_end = log_params_on_trial_end
        self.mlflow_util = _MLflowLoggerUtil()  # ImportError without mlflow, as Ray's
        self._trial_runs: dict[Any, str] = {}

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.mlflow_util.setup_mlflow(
            tracking_uri=self.tracking_uri,
            registry_uri=self.registry_uri,
            experiment_name=self.experiment_name,
            tracking_token=self.tracking_token,
        )
        if self.tags is None:
            self.tags = {}
        self._trial_runs = {}

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            tags = dict(self.tags or {})
            tags["trial_name"] = str(trial)
            run = self.mlflow_util.start_run(tags=tags, run_name=str(trial))
            self._trial_runs[trial] = run.info.run_id
        if not self.log_params_on_trial_end:
            self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=trial.config)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        step = result.get("timesteps_total") or result["training_iteration"]
        run_id = self._trial_runs[trial]
        self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=result, step=step)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self._trial_runs[trial]
        if self.should_save_artifact:
            self.mlflow_util.save_artifacts(run_id=run_id, dir=trial.local_path)
        if self.log_params_on_trial_end:
            self.mlflow_util.log_params(run_id=run_id, params_to_log=trial.config)
        self.mlflow_util.end_run(run_id=run_id, status="FAILED" if failed else "FINISHED")
