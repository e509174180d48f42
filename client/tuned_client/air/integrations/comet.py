"""``ray.air.integrations.comet``: ``CometLoggerCallback``, as Ray's.

An ``Experiment`` per trial (``OfflineExperiment`` with ``online=False``; other
keyword arguments go to it), named after the trial, its config as parameters,
each result's numbers as metrics at step ``training_iteration`` (``trial_id``
and ``experiment_tag`` as "others", ``hostname``/``pid``/``date``/``node_ip``
as system info), checkpoints as artifacts with ``save_checkpoints``, and
Comet's auto-logging that throttles runs (output, git, CPU/GPU) off unless
asked for. Needs ``comet-ml``: the ``tuned[comet]`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...tune.analysis.metrics import flatten_dict
from ...tune.logger.logger import LoggerCallback


def _import_comet() -> Any:
    if "COMET_DISABLE_AUTO_LOGGING" not in os.environ:
        os.environ["COMET_DISABLE_AUTO_LOGGING"] = "1"
    try:
        import comet_ml
    except ImportError:
        raise RuntimeError("pip install 'comet-ml' to use CometLoggerCallback") from None
    return comet_ml


class CometLoggerCallback(LoggerCallback):
    """Comet logger: an experiment per trial, as Ray's ``CometLoggerCallback``."""

    _exclude_autolog = [
        "auto_output_logging", "log_git_metadata", "log_git_patch", "log_env_cpu", "log_env_gpu",
    ]  # fmt: skip
    _exclude_results = ["done", "should_checkpoint"]
    _system_results = ["node_ip", "hostname", "pid", "date"]
    _other_results = ["trial_id", "experiment_id", "experiment_tag"]
    _episode_results = ["hist_stats/episode_reward", "hist_stats/episode_lengths"]

    def __init__(
        self,
        online: bool = True,
        tags: list[str] | None = None,
        save_checkpoints: bool = False,
        **experiment_kwargs: Any,
    ) -> None:
        _import_comet()
        self.online = online
        self.tags = tags
        self.save_checkpoints = save_checkpoints
        self.experiment_kwargs = experiment_kwargs
        for option in self._exclude_autolog:
            if not self.experiment_kwargs.get(option):
                self.experiment_kwargs[option] = False
        self._trial_experiments: dict[Any, Any] = {}

    @staticmethod
    def _check_key_name(key: str, item: str) -> bool:
        return key.startswith(item + "/") or key == item

    def _matches(self, key: str, items: list[str]) -> bool:
        return any(self._check_key_name(key, item) for item in items)

    def log_trial_start(self, trial: Any) -> None:
        comet_ml = _import_comet()
        experiment = self._trial_experiments.get(trial)
        if experiment is None:
            cls = comet_ml.Experiment if self.online else comet_ml.OfflineExperiment
            experiment = self._trial_experiments[trial] = cls(**self.experiment_kwargs)
            comet_ml.config.set_global_experiment(None)  # several experiments at once
        experiment.set_name(str(trial))
        experiment.add_tags(self.tags)
        experiment.log_other("Created from", "Ray")  # as Ray's: Comet's UI groups by it
        config = dict(trial.config)
        config.pop("callbacks", None)
        experiment.log_parameters(config)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if trial not in self._trial_experiments:
            self.log_trial_start(trial)
        experiment = self._trial_experiments[trial]
        step = result["training_iteration"]
        config_update = dict(result.get("config") or {})
        config_update.pop("callbacks", None)
        for k, v in config_update.items():
            if isinstance(v, dict):
                experiment.log_parameters(flatten_dict({k: v}, "/"), step=step)
            else:
                experiment.log_parameter(k, v, step=step)
        other, metrics, system, episodes = {}, {}, {}, {}
        for k, v in flatten_dict(result, delimiter="/").items():
            if k == "config" or k.startswith("config/") or self._matches(k, self._exclude_results):
                continue
            if self._matches(k, self._other_results):
                other[k] = v
            elif self._matches(k, self._system_results):
                system[k] = v
            elif self._matches(k, self._episode_results):
                episodes[k] = v
            else:
                metrics[k] = v
        experiment.log_others(other)
        experiment.log_metrics(metrics, step=step)
        for k, v in system.items():
            experiment.log_system_info(k, v)
        for k, v in episodes.items():
            experiment.log_curve(k, x=range(len(v)), y=v, step=step)

    def log_trial_save(self, trial: Any) -> None:
        if not (self.save_checkpoints and trial.checkpoint) or trial not in self._trial_experiments:
            return
        comet_ml = _import_comet()
        artifact = comet_ml.Artifact(name=f"checkpoint_{trial}", artifact_type="model")
        root = str(getattr(trial.checkpoint, "path", trial.checkpoint))
        for folder, _dirs, files in os.walk(root):
            for file in files:
                local = Path(folder, file)
                artifact.add(local.as_posix(), logical_path=local.relative_to(root).as_posix())
        self._trial_experiments[trial].log_artifact(artifact)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        experiment = self._trial_experiments.pop(trial, None)
        if experiment is not None:
            experiment.end()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for experiment in self._trial_experiments.values():
            experiment.end()
        self._trial_experiments.clear()
