"""Talking to MLflow for the callback and ``setup_mlflow`` (Ray's ``_MLflowLoggerUtil``).

Ray's behaviour kept: the experiment is found by id (argument, then
``MLFLOW_EXPERIMENT_ID``), then by name (argument, then
``MLFLOW_EXPERIMENT_NAME``), else created by name when allowed; metrics that
cannot be turned into floats are skipped; nested params and metrics are
flattened with ``/``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ...tune.analysis.metrics import flatten_dict

logger = logging.getLogger(__name__)


class _MLflowLoggerUtil:
    """Sets MLflow up and logs to a run by id (a client) or to the active run."""

    def __init__(self) -> None:
        import mlflow

        self._mlflow: Any = mlflow
        self.experiment_id: str | None = None

    def setup_mlflow(
        self,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        experiment_id: str | None = None,
        experiment_name: str | None = None,
        tracking_token: str | None = None,
        artifact_location: str | None = None,
        create_experiment_if_not_exists: bool = True,
    ) -> None:
        """Set the tracking and registry URIs and pick (or create) the experiment."""
        if tracking_token:
            os.environ["MLFLOW_TRACKING_TOKEN"] = tracking_token
        self._mlflow.set_tracking_uri(tracking_uri)
        self._mlflow.set_registry_uri(registry_uri)

        if experiment_id is None:
            experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if experiment_id is not None:
            from mlflow.exceptions import MlflowException

            try:
                self._mlflow.get_experiment(experiment_id=experiment_id)
                self.experiment_id = experiment_id
                return
            except MlflowException:
                pass

        if experiment_name is None:
            experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if experiment_name is not None:
            found = self._mlflow.get_experiment_by_name(name=experiment_name)
            if found:
                self.experiment_id = found.experiment_id
                return

        if experiment_name and create_experiment_if_not_exists:
            self.experiment_id = self._mlflow.create_experiment(
                name=experiment_name, artifact_location=artifact_location
            )
            return
        if create_experiment_if_not_exists:
            raise ValueError(
                f"Experiment with the provided experiment_id: {experiment_id} does not exist "
                "and no experiment_name provided. At least one of these has to be provided."
            )
        raise ValueError(
            f"Experiment with the provided experiment_id: {experiment_id} or experiment_name: "
            f"{experiment_name} does not exist. Please create an MLflow experiment and provide "
            "either its id or name."
        )

    @staticmethod
    def _parse_dict(dict_to_log: dict[str, Any]) -> dict[str, float]:
        """The values MLflow can log as metrics (floats); the others are skipped."""
        out: dict[str, float] = {}
        for key, value in dict_to_log.items():
            try:
                out[key] = float(value)
            except (ValueError, TypeError):
                logger.debug("Cannot log key %s with value %s as a float metric", key, value)
        return out

    def start_run(
        self, run_name: str | None = None, tags: dict[str, Any] | None = None,
        set_active: bool = False,
    ) -> Any:  # fmt: skip
        """A new run (the active one with ``set_active``, or that one if there is one)."""
        tags = dict(tags or {})
        if set_active:
            active = self._mlflow.active_run()
            if active:
                return active
            return self._mlflow.start_run(
                run_name=run_name, experiment_id=self.experiment_id, tags=tags
            )
        return self._get_client().create_run(
            run_name=run_name, experiment_id=self.experiment_id, tags=tags
        )

    def _run_exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._mlflow.get_run(run_id=run_id)
        except MlflowException:
            return False
        return True

    def _get_client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(
            tracking_uri=self._mlflow.get_tracking_uri(),
            registry_uri=self._mlflow.get_registry_uri(),
        )

    def log_params(self, params_to_log: dict[str, Any], run_id: str | None = None) -> None:
        params = flatten_dict(params_to_log)
        if run_id and self._run_exists(run_id):
            client = self._get_client()
            for key, value in params.items():
                client.log_param(run_id=run_id, key=key, value=value)
        else:
            for key, value in params.items():
                self._mlflow.log_param(key=key, value=value)

    def log_metrics(
        self, step: int, metrics_to_log: dict[str, Any], run_id: str | None = None
    ) -> None:
        metrics = self._parse_dict(flatten_dict(metrics_to_log))
        if run_id and self._run_exists(run_id):
            client = self._get_client()
            for key, value in metrics.items():
                client.log_metric(run_id=run_id, key=key, value=value, step=step)
        else:
            for key, value in metrics.items():
                self._mlflow.log_metric(key=key, value=value, step=step)

    def save_artifacts(self, dir: str, run_id: str | None = None) -> None:
        if run_id and self._run_exists(run_id):
            self._get_client().log_artifacts(run_id=run_id, local_dir=dir)
        else:
            self._mlflow.log_artifacts(local_dir=dir)

    def end_run(self, status: str | None = None, run_id: str | None = None) -> None:
        active = self._mlflow.active_run()
        if run_id and self._run_exists(run_id) and not (active and active.info.run_id == run_id):
            self._get_client().set_terminated(run_id=run_id, status=status)
        else:
            self._mlflow.end_run(status=status)
