"""``ResultGrid`` (``ray.tune.result_grid``): every trial's ``Result``, as fit() returns them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .analysis.dataframes import results_dataframe
from .analysis.metrics import best_index, check_scope
from .result import Result


class ResultGrid:
    """The results of every trial of an experiment, in trial order."""

    def __init__(
        self,
        results: list[Result] | Any,
        experiment_path: str = "",
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        """``results``: the Results; or, as Ray's ``ResultGrid(experiment_analysis)``,
        an ``ExperimentAnalysis`` (its trials, path, default metric and mode)."""
        grid = getattr(results, "result_grid", None)
        if isinstance(grid, ResultGrid):
            results, experiment_path = grid._results, experiment_path or grid.experiment_path
            metric, mode = metric or grid._metric, mode or grid._mode
        self._results: list[Result] = list(results)
        self.experiment_path: str = experiment_path
        self._metric: str | None = metric
        self._mode: str | None = mode

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        return self._results[i]

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    @property
    def errors(self) -> list[Exception]:
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    @property
    def num_terminated(self) -> int:
        return sum(1 for r in self._results if r.status == "TERMINATED")

    def get_best_result(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Result:
        """The best trial's Result (Ray's rules: see ``analysis/metrics.py``).

        With a single trial that trial is the best, with or without a metric.
        """
        if len(self._results) == 1:
            return self._results[0]
        metric = metric or self._metric
        mode = mode or self._mode
        if not metric:
            raise ValueError(
                "No metric is provided. Either pass in a `metric` arg to `get_best_result` or "
                "specify a metric in the `TuneConfig` of your `Tuner`."
            )
        if not mode:
            raise ValueError(
                "No mode is provided. Either pass in a `mode` arg to `get_best_result` or "
                "specify a mode in the `TuneConfig` of your `Tuner`."
            )
        if mode not in ("min", "max"):
            raise ValueError("If set, `mode` has to be one of [min, max]")
        check_scope(scope)
        analyses = [r.metric_analysis(metric, scope) for r in self._results]
        best = best_index(analyses, mode, scope, filter_nan_and_inf)
        if best is None:
            message = (
                f"No best trial found for the given metric: {metric}. This means that no trial "
                "has reported this metric"
            )
            message += (
                ", or all values reported for this metric are NaN. To not ignore NaN values, "
                "you can set the `filter_nan_and_inf` arg to False."
                if filter_nan_and_inf
                else "."
            )
            raise RuntimeError(message)
        return self._results[best]

    def get_dataframe(
        self, filter_metric: str | None = None, filter_mode: str | None = None
    ) -> Any:
        """One row per trial: its last result, or with ``filter_metric`` and ``filter_mode``
        the result where the metric was best; nested metrics and config flattened with
        ``/`` (``config/nested/param``), and the trial's ``logdir``."""
        return results_dataframe(self._results, filter_metric, filter_mode)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {r!r}" for r in self._results)
        return f"ResultGrid<[\n{inner}\n]>"


__all__ = ["Result", "ResultGrid"]
