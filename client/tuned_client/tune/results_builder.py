"""Turning the client's trial views into Ray-shaped ``Result`` objects."""

from __future__ import annotations

from .. import protocol as p
from ..checkpoint import Checkpoint
from .progress import TrialView
from .result import Result, trial_error
from .result_grid import ResultGrid


def to_result(view: TrialView) -> Result:
    """The trial's Result; its metrics stay packed, and its checkpoints unlisted, until read."""
    error = None
    if view.status == "ERROR":
        error = trial_error(view.error or "trial failed", view.traceback, view.trial_id, view.path)
    packed = view.packed_result()
    return Result(
        None if packed is not None else view.last_result,
        view.config,
        view.path,
        error=error,
        checkpoint=Checkpoint(view.checkpoint) if view.checkpoint else None,
        trial_id=view.trial_id,
        status=view.status,
        _packed_metrics=packed,
    )


def build_results(
    accepted: p.Accepted, trials: dict[str, TrialView], metric: str | None, mode: str | None
) -> ResultGrid:
    ordered = [trials[tid] for tid in accepted.trial_ids if tid in trials]
    listed = set(accepted.trial_ids)
    ordered += [v for k, v in trials.items() if k not in listed]
    return ResultGrid([to_result(v) for v in ordered], accepted.path, metric, mode)
