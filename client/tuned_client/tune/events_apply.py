"""Folding the daemon's events into the client's view of each trial.

``fold`` updates the views and says which ``tune.Callback`` hooks the event
calls (the follower calls them after the scheduler and searcher have seen the
event, as Ray's controller does).
"""

from __future__ import annotations

from typing import Any

from .. import protocol as p
from ..checkpoint import Checkpoint
from .trial import TrialView

Hooks = list[tuple[str, dict[str, Any]]]


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


def fold(trials: dict[str, TrialView], event: Any) -> Hooks:
    """Update ``trials`` from one event; the callback hooks it calls, with their arguments."""
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
        return []
    view = trials.get(getattr(event, "trial_id", ""))
    if view is None:
        return []
    if isinstance(event, p.TrialStarted):
        view.status, view.pid, view.path = "RUNNING", event.pid, event.trial_dir
        view.resources = dict(event.resources)
        view.attempt = event.attempt
        hooks: Hooks = [("on_trial_start", {"trial": view})]
        if view.checkpoint:  # it resumes from a checkpoint: Ray restores it
            hooks.append(("on_trial_restore", {"trial": view}))
        return hooks
    if isinstance(event, p.TrialResult):
        view.set_packed_result(bytes(event.metrics))  # a copy: not a view of the whole frame
        return [("on_trial_result", {"trial": view, "result": view.last_result})]
    if isinstance(event, p.TrialCheckpoint):
        view.checkpoint = event.path
        return [
            ("on_trial_save", {"trial": view}),
            ("on_checkpoint", {"trial": view, "checkpoint": Checkpoint(event.path)}),
        ]
    if isinstance(event, p.TrialRetrying):
        view.status = "PENDING"
        view.error = event.error
        return [("on_trial_recover", {"trial": view})]
    if isinstance(event, p.TrialFinished):
        view.finish(event.status, event.error, event.traceback)
        hook = "on_trial_complete" if event.status == "TERMINATED" else "on_trial_error"
        return [(hook, {"trial": view})]
    return []
