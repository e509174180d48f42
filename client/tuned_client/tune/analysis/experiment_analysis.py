"""``ExperimentAnalysis`` (``ray.tune.ExperimentAnalysis``): questions asked of an experiment.

``tune.run`` returns one; ``ExperimentAnalysis(path)`` reads any experiment
folder back, the daemon's or a copy of it. Scores follow Ray's rules
(``metrics.py``): the best trial by ``last``, ``avg``, ``last-N-avg`` or
``all``, NaN and infinite scores skipped unless asked otherwise, and
``None`` (with a warning) when no trial reported the metric.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...checkpoint import Checkpoint
from .dataframes import results_dataframe
from .loading import load_results, load_state
from .metrics import (
    best_index,
    check_scope,
    flatten_dict,
    metric_analysis,
    unflattened_lookup,
    validate_metric,
    validate_mode,
)
from .trial_folder import read_rows

if TYPE_CHECKING:
    from ..result import Result
    from ..result_grid import ResultGrid

log = logging.getLogger("tuned_client")
TRAINING_ITERATION = "training_iteration"
DEFAULT_METRIC = "_metric"


class Trial:
    """A finished trial as ``analysis.trials`` holds it, printed as Ray prints its trials
    (``train_5f927_00000``: the trainable's name and the trial id)."""

    def __init__(self, result: Result, trainable_name: str = "") -> None:
        self._result = result
        self.trial_id = result.trial_id
        self.config: dict[str, Any] = dict(result.config or {})
        self.status = result.status
        self.error = result.error
        self.path = result.path
        self.trainable_name = trainable_name
        self._rows: list[dict[str, Any]] | None = None

    @property
    def last_result(self) -> dict[str, Any]:
        return dict(self._result.peek_metrics() or {})

    @property
    def local_path(self) -> str:
        return self.path

    @property
    def logdir(self) -> str:
        return self.path

    @property
    def checkpoint(self) -> Checkpoint | None:
        return self._result.checkpoint

    @property
    def error_file(self) -> str | None:
        path = os.path.join(self.path, "error.txt")
        return path if os.path.isfile(path) else None

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = read_rows(self.path)
        return self._rows

    @property
    def metric_analysis(self) -> dict[str, dict[str, float]]:
        """Per metric: ``max``, ``min``, ``avg``, ``last``, ``last-5-avg``, ``last-10-avg``."""
        rows = self.rows or [self.last_result]
        if self.rows and self.last_result:  # exact: result.json holds no NaN or inf
            rows = [*rows[:-1], {**rows[-1], **self.last_result}]
        names = {k for row in rows for k in flatten_dict(row)}
        out = {}
        for name in sorted(names):
            scores = metric_analysis(rows, name)
            if scores is not None:
                out[name] = scores
        return out

    def __str__(self) -> str:
        name = os.path.basename(self.path.rstrip("/"))
        if self.trainable_name and self.trial_id:
            return f"{self.trainable_name}_{self.trial_id}"
        return name or self.trial_id

    __repr__ = __str__


class ExperimentAnalysis:
    def __init__(
        self,
        experiment_checkpoint_path: str | os.PathLike[str] | ResultGrid,
        *,
        storage_filesystem: Any = None,
        trials: list[Trial] | None = None,
        default_metric: str | None = None,
        default_mode: str | None = None,
    ) -> None:
        from ..result_grid import ResultGrid

        if default_mode and default_mode not in ("min", "max"):
            raise ValueError("`default_mode` has to be None or one of [min, max]")
        self.default_metric = default_metric
        self.default_mode = default_mode
        if self.default_metric is None and self.default_mode is not None:
            self.default_metric = DEFAULT_METRIC  # Ray's anonymous metric
        source = experiment_checkpoint_path
        if isinstance(source, ResultGrid):
            results = list(source)
            self.experiment_path = source.experiment_path
        else:
            path = os.path.expanduser(os.fspath(source))
            results = load_results(path)
            self.experiment_path = path[:-1] if path.endswith("/") else path
            if os.path.isfile(self.experiment_path):
                self.experiment_path = os.path.dirname(self.experiment_path)
        self.result_grid = ResultGrid(results, self.experiment_path, default_metric, default_mode)
        name = _trainable_name(self.experiment_path)
        self.trials = trials if trials is not None else [Trial(r, name) for r in results]

    # ------------------------------------------------------------ trials and configs

    def get_all_configs(self, prefix: bool = False) -> dict[str, dict[str, Any]]:
        """Trial id -> config (flattened as ``config/...`` with ``prefix=True``)."""
        return {
            t.trial_id: flatten_dict({"config": t.config}) if prefix else t.config
            for t in self.trials
        }

    def get_best_trial(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Trial | None:
        if len(self.trials) == 1:
            return self.trials[0]
        metric = validate_metric(metric, self.default_metric)
        mode = validate_mode(mode, self.default_mode)
        check_scope(scope)
        analyses = [t.metric_analysis.get(metric) for t in self.trials]
        best = best_index(analyses, mode, scope, filter_nan_and_inf)
        if best is None:
            log.warning("Could not find best trial. Did you pass the correct `metric` parameter?")
            return None
        return self.trials[best]

    def get_best_config(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> dict[str, Any] | None:
        best = self.get_best_trial(metric, mode, scope)
        return best.config if best else None

    def _require_defaults(self, what: str) -> None:
        if not self.default_metric or not self.default_mode:
            raise ValueError(
                f"To fetch the `{what}`, pass a `metric` and `mode` parameter to `tune.run()`. "
                f"Alternatively, use the `get_{what}(metric, mode)` method to set the metric "
                "and mode explicitly."
            )

    @property
    def best_trial(self) -> Trial | None:
        self._require_defaults("best_trial")
        return self.get_best_trial(self.default_metric, self.default_mode)

    @property
    def best_config(self) -> dict[str, Any] | None:
        self._require_defaults("best_config")
        return self.get_best_config(self.default_metric, self.default_mode)

    @property
    def best_result(self) -> dict[str, Any]:
        self._require_defaults("best_result")
        best = self.best_trial
        return best.last_result if best else {}

    @property
    def best_logdir(self) -> str | None:
        self._require_defaults("best_logdir")
        best = self.best_trial
        return best.path if best else None

    @property
    def best_checkpoint(self) -> Checkpoint | None:
        self._require_defaults("best_checkpoint")
        best = self.best_trial
        if best is None:
            raise ValueError(
                f"No best trial found. Please check if you specified the correct default metric "
                f"({self.default_metric}) and mode ({self.default_mode})."
            )
        return self.get_best_checkpoint(best, self.default_metric, self.default_mode)

    # ------------------------------------------------------------ checkpoints

    def _checkpoints_with_metric(self, trial: Trial, metric: str) -> list[tuple[Checkpoint, Any]]:
        kept = trial._result.best_checkpoints
        return [(cp, unflattened_lookup(metric, row)) for cp, row in kept]

    def get_best_checkpoint(
        self, trial: Trial, metric: str | None = None, mode: str | None = None
    ) -> Checkpoint | None:
        """The trial's kept checkpoint whose result scored best (NaN scores left out)."""
        metric = metric or self.default_metric or TRAINING_ITERATION
        mode = validate_mode(mode, self.default_mode)
        scored = [
            (cp, float(v))
            for cp, v in self._checkpoints_with_metric(trial, metric)
            if isinstance(v, int | float) and v == v
        ]
        if not scored:
            log.error("No checkpoints have been found for trial %s.", trial)
            return None
        sign = -1 if mode == "min" else 1
        return max(scored, key=lambda pair: sign * pair[1])[0]

    def get_last_checkpoint(
        self, trial: Trial | None = None, metric: str = TRAINING_ITERATION, mode: str = "max"
    ) -> Checkpoint | None:
        """The trial's latest checkpoint; without a trial, the best one's by metric/mode."""
        trial = trial or self.get_best_trial(metric, mode)
        if trial is None:
            return None
        return self.get_best_checkpoint(trial, TRAINING_ITERATION, "max")

    # ------------------------------------------------------------ tables

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> Any:
        """A row per trial: the last result, or where ``metric`` was best for ``mode``."""
        return results_dataframe([t._result for t in self.trials], metric, mode)

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return {t.trial_id: t.last_result for t in self.trials}

    @property
    def results_df(self) -> Any:
        import pandas as pd

        rows = [flatten_dict(t.last_result) for t in self.trials if t.last_result]
        frame = pd.DataFrame.from_records(rows)
        return frame.set_index("trial_id") if "trial_id" in frame else frame

    @property
    def trial_dataframes(self) -> dict[str, Any]:
        import pandas as pd

        return {
            t.trial_id: pd.json_normalize(t.rows, sep="/") if t.rows else pd.DataFrame()
            for t in self.trials
        }

    @property
    def best_dataframe(self) -> Any:
        self._require_defaults("best_dataframe")
        best = self.best_trial
        return self.trial_dataframes[best.trial_id] if best else None

    def stats(self) -> dict[str, Any]:
        return {"num_trials": len(self.trials), "experiment_path": self.experiment_path}


def _trainable_name(experiment_path: str) -> str:
    """The trainable's name as the daemon recorded it, for printing trials as Ray does."""
    try:
        state = load_state(Path(experiment_path))
    except ValueError:
        return ""
    return state.spec.trainable_name if state is not None else ""
