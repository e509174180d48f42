"""``tune.CLIReporter`` and ``tune.JupyterNotebookReporter``: Ray Tune's older console.

Given as ``RunConfig(progress_reporter=...)`` (or with ``RAY_AIR_NEW_OUTPUT=0``),
``fit()`` prints their "== Status ==" block instead of the 2.x "Trial status"
one, with their options: the columns, the rows shown, how often, the best
trial by ``metric``/``mode``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .progress import render
from .trial import TrialView


def _columns(columns: Any) -> dict[str, str] | None:
    if columns is None:
        return None
    if isinstance(columns, dict):
        return {str(k): str(v) for k, v in columns.items()}
    return {str(c): str(c) for c in columns}


class ProgressReporter:
    """Base of the reporters ``fit()`` prints with (``ray.tune.ProgressReporter``)."""

    def setup(self, start_time: float | None = None, **info: Any) -> None:
        """Called once by ``fit()`` with the experiment's facts before anything is printed."""

    def should_report(self, trials: Sequence[Any], done: bool = False) -> bool:
        return True

    def report(self, trials: Sequence[Any], done: bool, *sys_info: Any) -> None:
        print(self.report_text(trials, done))

    def report_text(self, trials: Sequence[Any], done: bool = False) -> str:
        raise NotImplementedError


class TuneReporterBase(ProgressReporter):
    def __init__(
        self,
        *,
        metric_columns: list[str] | dict[str, str] | None = None,
        parameter_columns: list[str] | dict[str, str] | None = None,
        total_samples: int | None = None,
        max_progress_rows: int = 20,
        max_error_rows: int = 20,
        max_column_length: int = 20,
        max_report_frequency: int = 5,
        infer_limit: int = 3,
        print_intermediate_tables: bool | None = None,
        metric: str | None = None,
        mode: str | None = None,
        sort_by_metric: bool = False,
    ) -> None:
        if mode not in (None, "min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        self._metric_columns = _columns(metric_columns)
        self._parameter_columns = _columns(parameter_columns)
        # Given as lists: an added column cannot be renamed (Ray's rule).
        self._listed = {
            "metric": isinstance(metric_columns, list | tuple),
            "parameter": isinstance(parameter_columns, list | tuple),
        }
        self._total_samples = total_samples or 0
        self._max_progress_rows = max_progress_rows
        self._max_error_rows = max_error_rows
        self._max_column_length = max_column_length
        self._max_report_frequency = max_report_frequency
        self._infer_limit = infer_limit
        self._print_intermediate_tables = print_intermediate_tables
        self._metric = metric
        self._mode = mode
        self._sort_by_metric = sort_by_metric
        self._last_report_time = 0.0
        self._start_time = time.time()
        self._info: dict[str, Any] = {}

    def setup(self, start_time: float | None = None, **info: Any) -> None:
        self._start_time = start_time or time.time()
        metric, mode = info.pop("metric", None), info.pop("mode", None)
        self.set_search_properties(metric, mode)
        self._info = info

    def set_search_properties(self, metric: str | None, mode: str | None) -> bool:
        if self._metric and metric and self._metric != metric:
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def set_total_samples(self, total_samples: int) -> None:
        self._total_samples = total_samples

    def add_metric_column(self, metric: str, representation: str | None = None) -> None:
        self._metric_columns = self._added("metric", self._metric_columns, metric, representation)

    def add_parameter_column(self, parameter: str, representation: str | None = None) -> None:
        self._parameter_columns = self._added(
            "parameter", self._parameter_columns, parameter, representation
        )

    def _added(
        self, kind: str, columns: dict[str, str] | None, name: str, representation: str | None
    ) -> dict[str, str]:
        columns = columns if columns is not None else {}
        if name in columns:
            raise ValueError(f"Column {name} already exists.")
        if self._listed[kind] and representation is not None and representation != name:
            raise ValueError(
                f"`representation` cannot differ from `{kind}` if this reporter was "
                f"initialized with a list of {kind} columns."
            )
        columns[name] = representation or name
        return columns

    def should_report(self, trials: Sequence[Any], done: bool = False) -> bool:
        if done or time.time() - self._last_report_time > self._max_report_frequency:
            self._last_report_time = time.time()
            return True
        return False

    def _best_line(self, trials: Sequence[TrialView]) -> str:
        if not self._metric or not self._mode:
            return ""
        scored: list[tuple[TrialView, float]] = []
        for t in trials:
            value = (t.last_result or {}).get(self._metric)
            if isinstance(value, int | float) and value == value:  # not NaN
                scored.append((t, float(value)))
        if not scored:
            return ""
        pick = max if self._mode == "max" else min
        best, value = pick(scored, key=lambda pair: pair[1])
        return (
            f"Current best trial: {best.trial_id} with {self._metric}={value} and "
            f"parameters={best.config}"
        )

    def report_text(self, trials: Sequence[Any], done: bool = False) -> str:
        views = list(trials)
        if self._sort_by_metric and self._metric and self._mode:
            sign = -1.0 if self._mode == "max" else 1.0
            views.sort(
                key=lambda t: sign * float((t.last_result or {}).get(self._metric, float("inf")))
            )
        info = self._info
        return render(
            views,
            started=self._start_time,
            logdir=str(info.get("logdir", "")),
            capacity=dict(info.get("capacity", {})),
            metric=self._metric,
            parameter_columns=self._parameter_columns,
            metric_columns=self._metric_columns,
            max_rows=self._max_progress_rows if not done else max(len(views), 1),
            best_line=self._best_line(views),
            scheduler_line=str(info.get("scheduler_line", "")),
            total_samples=self._total_samples,
        )


class CLIReporter(TuneReporterBase):
    """Prints the status block to the terminal (``ray.tune.CLIReporter``)."""


class JupyterNotebookReporter(TuneReporterBase):
    """Shows the status block in a notebook cell, redrawn in place (``overwrite``)."""

    def __init__(self, *, overwrite: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._overwrite = overwrite

    def report(self, trials: Sequence[Any], done: bool, *sys_info: Any) -> None:
        text = self.report_text(trials, done)
        try:
            from IPython.display import (
                clear_output,
                display,
            )
        except ImportError:
            print(text)
            return
        if self._overwrite:
            clear_output(wait=True)
        display({"text/plain": text}, raw=True)
