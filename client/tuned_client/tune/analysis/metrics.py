"""Scoring trials the way Ray's ``ExperimentAnalysis`` and ``ResultGrid`` do.

Ray keeps, per trial and metric, the ``max``, ``min``, ``avg``, ``last``,
``last-5-avg`` and ``last-10-avg`` of every numeric value reported; the best
trial is the one whose score for the chosen scope is best, NaN and infinite
scores skipped unless ``filter_nan_and_inf=False``, ties going to the earlier
trial. Pure functions over result rows: no pandas, no files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Number
from typing import Any

from ...session import flat_get

SCOPES = ("all", "last", "avg", "last-5-avg", "last-10-avg")


def flatten_dict(
    value: Mapping[str, Any], delimiter: str = "/", prefix: str = ""
) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (Ray's ``flatten_dict``)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{delimiter}{key}" if prefix else str(key)
        if isinstance(item, Mapping) and item:
            out.update(flatten_dict(item, delimiter, name))
        else:
            out[name] = item
    return out


def unflattened_lookup(name: str, row: Mapping[str, Any], default: Any = None) -> Any:
    """``row["a/b"]``, or ``row["a"]["b"]`` for a nested metric given flat (Ray's name)."""
    return flat_get(row, name, default)


def is_nan_or_inf(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool | complex)


def metric_analysis(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[str, float] | None:
    """The trial's scores for ``metric`` over its reported ``rows``; None if never reported.

    ``avg`` is Ray's running mean weighted by ``training_iteration``, so a trial
    restored mid-way averages as it would have without the interruption.
    """
    scores: dict[str, float] | None = None
    recent: list[float] = []
    for row in rows:
        value = unflattened_lookup(metric, row)
        if not _numeric(value):
            continue
        value = float(value)
        recent = [*recent[-9:], value]
        if scores is None:
            scores = {"max": value, "min": value, "avg": value, "last": value}
        else:
            step = row.get("training_iteration") or 1
            scores["max"] = max(value, scores["max"])
            scores["min"] = min(value, scores["min"])
            scores["avg"] = value / step + (step - 1) / step * scores["avg"]
            scores["last"] = value
        scores["last-5-avg"] = sum(recent[-5:]) / len(recent[-5:])
        scores["last-10-avg"] = sum(recent) / len(recent)
    return scores


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(
            f"ExperimentAnalysis: attempting to get best trial for scope {scope} not in "
            '["all", "last", "avg", "last-5-avg", "last-10-avg"]. If you didn\'t pass a '
            "`metric` parameter to `tune.run()`, you have to pass one when fetching the best "
            "trial."
        )


def best_index(
    analyses: Sequence[dict[str, float] | None], mode: str, scope: str, filter_nan_and_inf: bool
) -> int | None:
    """Index of the best trial given each trial's ``metric_analysis``; None if none scored."""
    best: int | None = None
    best_score = 0.0
    for index, scores in enumerate(analyses):
        if scores is None:
            continue
        score = scores[mode] if scope == "all" else scores[scope]
        if filter_nan_and_inf and is_nan_or_inf(score):
            continue
        if best is None or (score > best_score if mode == "max" else score < best_score):
            best, best_score = index, score
    return best


def validate_mode(mode: str | None, default: str | None) -> str:
    if not mode and not default:
        raise ValueError(
            "No `mode` has been passed and  `default_mode` has not been set. Please specify "
            "the `mode` parameter."
        )
    if mode and mode not in ("min", "max"):
        raise ValueError("If set, `mode` has to be one of [min, max]")
    return str(mode or default)


def validate_metric(metric: str | None, default: str | None) -> str:
    if not metric and not default:
        raise ValueError(
            "No `metric` has been passed and  `default_metric` has not been set. Please "
            "specify the `metric` parameter."
        )
    return str(metric or default)
