"""Ray's checks on each result: the metric the experiment optimises, and the stop keys.

A misspelt ``TuneConfig(metric=...)`` or stop key must fail at the first result
that lacks it, not after the whole run at ``get_best_result()``. The messages
and the switch that turns the metric check off
(``TUNE_DISABLE_STRICT_METRIC_CHECKING=1``) are Ray's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..session import DEFAULT_METRIC, flat_get
from .fit_settings import FitSettings
from .result import TuneError

_MISSING = object()

# Keys that say nothing of what the trainable reported (Ray's DEBUG_METRICS, and done).
DEBUG_METRICS = frozenset(
    {"trial_id", "experiment_id", "date", "timestamp", "pid", "hostname", "node_ip", "config"}
)


def _metric_of(obj: Any) -> str | None:
    metric = getattr(obj, "metric", None)
    return None if metric in (None, DEFAULT_METRIC) else metric


def missing_metric(fit: FitSettings, result: Mapping[str, Any]) -> tuple[Any, str] | None:
    """The metric(s) the result lacks and who expects them, as Ray's controller checks."""
    if os.environ.get("TUNE_DISABLE_STRICT_METRIC_CHECKING", "0") == "1":
        return None
    if len({k for k in result if k not in DEBUG_METRICS and k != "done"}) <= 1:
        return None
    tc = fit.tune_config
    base = tc.metric if tc.metric != DEFAULT_METRIC else None
    scheduler = _metric_of(tc.scheduler)
    searcher: Any = _metric_of(tc.search_alg)
    if isinstance(searcher, str):
        searcher = [searcher]
    def lacks(metric: str) -> bool:  # "a/b" reaches into nested results, as Ray's
        return flat_get(result, metric, _MISSING) is _MISSING

    if base and lacks(base):
        return base, "tune.TuneConfig()"
    if scheduler and lacks(scheduler):
        return scheduler, type(tc.scheduler).__name__
    if searcher and any(lacks(m) for m in searcher):
        absent = [m for m in searcher if lacks(m)]
        return (absent[0] if len(absent) == 1 else absent), type(tc.search_alg).__name__
    return None


def check_result(fit: FitSettings, result: Mapping[str, Any]) -> None:
    """Raise as Ray does when a result lacks the metric or a stop key."""
    missing = missing_metric(fit, result)
    if missing is not None:
        metric, where = missing
        raise ValueError(
            f"Trial returned a result which did not include the specified metric(s) `{metric}` "
            f"that `{where}` expects. Make sure your calls to `tune.report()` include the "
            "metric, or set the TUNE_DISABLE_STRICT_METRIC_CHECKING environment variable to 1. "
            f"Result: {dict(result)}"
        )
    stop = fit.run_config.stop
    if isinstance(stop, Mapping) and not result.get("done"):
        for key in stop:
            if flat_get(result, key, _MISSING) is _MISSING:
                raise TuneError(
                    f"Stopping criteria {key} not provided in result dict. "
                    f"Keys are {list(result.keys())}."
                )


def needs_checks(fit: FitSettings) -> bool:
    """Whether any result could fail ``check_result``: a plain sweep (no metric, no
    scheduler, searcher or stop dict) skips it on every result, at no cost."""
    tc = fit.tune_config
    metric = tc.metric not in (None, DEFAULT_METRIC)
    return (
        metric
        or _metric_of(tc.scheduler) is not None
        or _metric_of(tc.search_alg) is not None
        or isinstance(fit.run_config.stop, Mapping)
    )
