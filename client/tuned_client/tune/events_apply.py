"""Folding the daemon's events into the client's view of each trial."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import protocol as p
from ..checkpoint import Checkpoint
from .callback import dispatch
from .progress import TrialView

if TYPE_CHECKING:
    from .tuner import _Run


def view_from_info(info: p.TrialInfo) -> TrialView:
    """A trial's view rebuilt from a full snapshot (after falling behind the stream)."""
    view = TrialView(
        trial_id=info.trial_id,
        name=info.name,
        tag=info.tag,
        config=p.unpack_user(info.config),
        status=info.status,
        path=info.path,
        error=info.error,
        traceback=info.traceback,
        checkpoint=info.checkpoint,
    )
    if info.last_result:
        view.set_packed_result(bytes(info.last_result))
    return view


def apply_event(run: _Run, event: Any) -> bool:
    """Update ``run.trials`` from one event and drive callbacks; True when finished."""
    trials = run.trials
    # Callbacks get every trial's view with each event: built only when there are
    # callbacks, or following 10,000 trials costs O(trials) per event.
    common: dict[str, Any] = (
        {"iteration": run.iteration, "trials": list(trials.values())} if run.callbacks else {}
    )
    if isinstance(event, p.TrialQueued):
        view = trials.get(event.trial_id)
        if view is None:
            trials[event.trial_id] = TrialView(
                trial_id=event.trial_id,
                name=event.name,
                tag=event.tag,
                config=p.unpack_user(event.config),
            )
        else:
            view.status = "PENDING"
    elif isinstance(event, p.TrialStarted):
        view = trials[event.trial_id]
        view.status, view.pid, view.path = "RUNNING", event.pid, event.trial_dir
        view.resources = dict(event.resources)
        dispatch(run.callbacks, "on_trial_start", trial=view, **common)
    elif isinstance(event, p.TrialResult):
        view = trials[event.trial_id]
        view.set_packed_result(bytes(event.metrics))  # a copy: not a view of the whole frame
        dispatch(run.callbacks, "on_trial_result", trial=view, result=view.last_result, **common)
    elif isinstance(event, p.TrialCheckpoint):
        view = trials[event.trial_id]
        view.checkpoint = event.path
        dispatch(
            run.callbacks, "on_checkpoint", trial=view, checkpoint=Checkpoint(event.path), **common
        )
    elif isinstance(event, p.TrialRetrying):
        view = trials[event.trial_id]
        view.status = "PENDING"
        dispatch(run.callbacks, "on_trial_recover", trial=view, **common)
    elif isinstance(event, p.TrialFinished):
        view = trials[event.trial_id]
        view.finish(event.status, event.error, event.traceback)
        hook = "on_trial_complete" if event.status == "TERMINATED" else "on_trial_error"
        dispatch(run.callbacks, hook, trial=view, **common)
    elif isinstance(event, p.ExperimentFinished):
        return True
    return False
