"""Turning the client's trial views into Ray-shaped ``Result`` objects."""

from __future__ import annotations

from pathlib import Path

from .. import protocol as p
from ..checkpoint import Checkpoint
from .progress import TrialView
from .result import Result, ResultGrid, TrialError


def _checkpoints(trial_dir: str) -> list[Checkpoint]:
    if not trial_dir or not Path(trial_dir).is_dir():
        return []
    found = sorted(
        d for d in Path(trial_dir).iterdir() if d.is_dir() and d.name.startswith("checkpoint_")
    )
    return [Checkpoint(str(d)) for d in found]


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
        best_checkpoints=[(c, {}) for c in _checkpoints(view.path)],
        trial_id=view.trial_id,
        status=view.status,
    )


def build_results(
    accepted: p.Accepted, trials: dict[str, TrialView], metric: str | None, mode: str | None
) -> ResultGrid:
    ordered = [trials[tid] for tid in accepted.trial_ids if tid in trials]
    ordered += [v for k, v in trials.items() if k not in set(accepted.trial_ids)]
    return ResultGrid([to_result(v) for v in ordered], accepted.path, metric, mode)
