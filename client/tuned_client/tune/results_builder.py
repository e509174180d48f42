"""Turning the client's trial views into Ray-shaped ``Result`` objects."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from .. import protocol as p
from ..checkpoint import Checkpoint
from .progress import TrialView
from .result import Result, ResultGrid, TrialError


def _checkpoints(trial_dir: str) -> list[tuple[Checkpoint, dict[str, Any]]]:
    """The checkpoint folders left after pruning, each with the metrics reported with it."""
    if not trial_dir or not Path(trial_dir).is_dir():
        return []
    found = sorted(
        d for d in Path(trial_dir).iterdir() if d.is_dir() and d.name.startswith("checkpoint_")
    )
    metrics: dict[str, dict[str, Any]] = {}
    if found:
        with contextlib.suppress(OSError):
            for line in (Path(trial_dir) / "result.json").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict) and row.get("checkpoint_dir_name"):
                        metrics[row["checkpoint_dir_name"]] = row
    return [(Checkpoint(str(d)), metrics.get(d.name, {})) for d in found]


def to_result(view: TrialView) -> Result:
    error = None
    if view.status == "ERROR":
        error = TrialError(view.error or "trial failed", view.traceback, view.trial_id)
    checkpoint = Checkpoint(view.checkpoint) if view.checkpoint else None
    return Result(
        metrics=view.last_result,
        config=view.config,
        path=view.path,
        error=error,
        checkpoint=checkpoint,
        best_checkpoints=_checkpoints(view.path),
        trial_id=view.trial_id,
        status=view.status,
    )


def build_results(
    accepted: p.Accepted, trials: dict[str, TrialView], metric: str | None, mode: str | None
) -> ResultGrid:
    ordered = [trials[tid] for tid in accepted.trial_ids if tid in trials]
    ordered += [v for k, v in trials.items() if k not in set(accepted.trial_ids)]
    return ResultGrid([to_result(v) for v in ordered], accepted.path, metric, mode)
