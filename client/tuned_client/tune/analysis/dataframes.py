"""Ray's ``ExperimentAnalysis.dataframe`` and ``ResultGrid.get_dataframe``: a row per trial.

It reads what any result-like object offers (its history, its last metrics,
its config and folder), so that ``Result`` and the analysis share it without
importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from .metrics import flatten_dict, unflattened_lookup


class ResultLike(Protocol):
    path: str

    @property
    def config(self) -> dict[str, Any] | None: ...

    def history(self) -> list[dict[str, Any]]: ...

    def peek_metrics(self) -> dict[str, Any] | None: ...


def _pick_row(rows: Sequence[dict[str, Any]], metric: str | None, mode: str | None) -> Any:
    if not mode or not metric:
        return rows[-1] if rows else None
    scored = [
        (float(v), i)
        for i, r in enumerate(rows)
        if isinstance(v := unflattened_lookup(metric, r), int | float)
        and not isinstance(v, bool)
        and not math.isnan(v)
    ]
    if not scored:
        return None
    # pandas' idxmax/idxmin: the first row holding the extreme value
    best = max(scored, key=lambda s: (s[0], -s[1])) if mode == "max" else min(scored)
    return rows[best[1]]


def results_dataframe(results: Iterable[ResultLike], metric: str | None, mode: str | None) -> Any:
    """Ray's ``ExperimentAnalysis.dataframe``: a row per trial that reported anything."""
    import pandas as pd

    if mode and mode not in ("min", "max"):
        raise ValueError("If set, `mode` has to be one of [min, max]")
    if mode and not metric:
        raise ValueError(
            "If a `mode` is passed to `ExperimentAnalysis.dataframe(), you'll also have to "
            "pass a `metric`!"
        )
    rows = []
    for result in results:
        history = result.history() if (metric and mode) else []
        if not history:
            last = result.peek_metrics()
            history = [dict(last)] if last else []
        row = _pick_row(history, metric, mode)
        if row is None:
            continue
        flat = flatten_dict(row)
        flat.update(flatten_dict({"config": result.config or {}}))
        flat["logdir"] = result.path
        rows.append(flat)
    return pd.DataFrame(rows)
