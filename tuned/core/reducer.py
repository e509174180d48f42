"""The one place where the daemon's state changes: a record in, the state it implies.

Every change of state is a record: an accepted experiment (``Submitted``), a
control request (``Control``) or an event. The daemon journals a new record,
publishes it if it is an event, and applies it here; start-up replays the
journal through the same ``apply``. So the live daemon and a daemon that
restarts from its journal cannot drift apart.

What is not state stays out: processes, allocations, tokens, open files. The
live daemon may prepare such things before it applies a record (admission
marks a trial RUNNING and takes it off its queue before its process starts),
so each handler brings the state to what the record says, whatever part of it
is already there.

Pure: no I/O. A record about a trial that was archived (finished, its data on
disk) asks ``revive`` for it, which the store provides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from tuned_client import protocol as p

from .keep import select_kept
from .ledger import Request, parse_request
from .model import FINAL, Experiment, Trial, move_experiment, transition
from .model import trial_id as make_trial_id
from .records import Control, Submitted
from .state import Exploit, State

Record = Submitted | Control | p.Event
Revive = Callable[[Experiment, int], Trial]


@dataclass
class Applied:
    """What applying a record left for the daemon to do outside the state."""

    trial: Trial | None = None
    experiment: Experiment | None = None
    dropped: list[str] = field(default_factory=list)  # checkpoint folders no longer kept


def no_revive(exp: Experiment, index: int) -> Trial:
    raise LookupError(f"trial {index} of experiment {exp.id} is archived")


def apply(state: State, record: Record, revive: Revive = no_revive) -> Applied:
    if isinstance(record, Submitted):
        return Applied(experiment=_submitted(state, record))
    if isinstance(record, Control):
        return _control(state, record, revive)
    handler = _EVENTS.get(type(record))
    if handler is None:
        return Applied()  # news, not state (ResourceSnapshot)
    exp = state.experiments.get(record.experiment_id)
    if exp is None:
        return Applied()
    return handler(state, exp, record, revive)


# ------------------------------------------------------------------ experiments


def _submitted(state: State, rec: Submitted) -> Experiment:
    spec = rec.spec
    trial_specs, spec.trials = spec.trials, []  # held by the trials from now on
    if spec.trainable:
        state.trainables[rec.experiment_id] = spec.trainable
    spec.trainable = b""  # its trainable file holds it since submit; trials load it from there
    state.shared.share(spec)
    state.exp_seq += 1
    exp = Experiment(rec.experiment_id, spec, Path(rec.path), state.exp_seq)
    state.experiments[exp.id] = exp
    requests = _Requests(spec.resources)
    for trial_id, ts in zip(rec.trial_ids, trial_specs, strict=True):
        trial = _new_trial(exp, trial_id, ts.tag, ts.config, ts.resources, requests)
        if ts.resume is not None:
            _resume_at(trial, ts.resume)
        exp.queue.append(trial)
    exp.closed = not spec.open_ended and not _grid_left(exp)
    return exp


def _grid_left(exp: Experiment) -> bool:
    """Whether its grid has trials still to make (made by the daemon as its queue needs)."""
    return exp.grid is not None and len(exp.trials) < exp.grid.total


def _resume_at(trial: Trial, at: p.TrialResume) -> None:
    """A trial that ran before (Tuner.restore of a lost experiment): on from its checkpoint.

    Its folder is its old one; its first attempt cuts the result files back to
    the checkpoint's row and hands the checkpoint to the trainable, as a retry does.
    """
    trial.dir = Path(at.dir)
    trial.checkpoint_offsets = (at.result_bytes, at.progress_bytes)
    if at.checkpoint:
        trial.checkpoint = at.checkpoint
        trial.checkpoint_iteration = trial.iteration = at.iteration
        trial.checkpoint_time = trial.time_total_s = at.time_total_s
        trial.kept_checkpoints = [(at.checkpoint, None)]


class _Requests:
    """One ``Request`` per distinct bundles: an experiment's trials share theirs.

    The scheduler tries each Request object once per pass, so sharing them is
    what keeps a pass over a blocked experiment of many trials cheap.
    """

    def __init__(self, default: list[dict[str, float]]) -> None:
        self.default = default
        self._by_bundles: dict[bytes, Request] = {}

    def get(self, bundles: list[dict[str, float]]) -> tuple[list[dict[str, float]], Request]:
        bundles = bundles or self.default
        key = msgspec.msgpack.encode(bundles)
        request = self._by_bundles.get(key)
        if request is None:
            request = self._by_bundles[key] = parse_request(bundles)
        return bundles, request


def _new_trial(
    exp: Experiment,
    trial_id: str,
    tag: str,
    config: msgspec.Raw,
    resources: list[dict[str, float]],
    requests: _Requests,
) -> Trial:
    bundles, request = requests.get(resources)
    trial = Trial(
        id=trial_id,
        index=len(exp.trials),
        tag=tag,
        experiment=exp,
        config=config,
        request=request,
        resources=bundles,
    )
    exp.trials.append(trial)
    return trial


def _accepted(state: State, exp: Experiment, ev: p.ExperimentAccepted, r: Revive) -> Applied:
    exp.started_at = ev.ts
    return Applied(experiment=exp)


def _experiment_finished(
    state: State, exp: Experiment, ev: p.ExperimentFinished, r: Revive
) -> Applied:
    exp.done, exp.cancelled, exp.interrupted = True, ev.cancelled, ev.interrupted
    state.trainables.pop(exp.id, None)
    return Applied(experiment=exp)


# ------------------------------------------------------------------ trials


def _trial(exp: Experiment, trial_id: str, revive: Revive) -> Trial | None:
    index = _index(exp, trial_id)
    if index is None:
        return None
    held = exp.trials[index]
    return held if held is not None else revive(exp, index)


def _index(exp: Experiment, trial_id: str) -> int | None:
    exp_id, _, tail = trial_id.rpartition("_")
    if exp_id != exp.id or not tail.isdigit() or int(tail) >= len(exp.trials):
        return None
    return int(tail)


def _queued(state: State, exp: Experiment, ev: p.TrialQueued, revive: Revive) -> Applied:
    """A trial entered its queue: added, retried from a crash, exploited, resumed."""
    if make_trial_id(exp.id, len(exp.trials)) == ev.trial_id:  # added (AddTrials)
        requests = _Requests(exp.spec.resources)
        added = _new_trial(exp, ev.trial_id, ev.tag, ev.config, ev.resources, requests)
        exp.queue.append(added)
        if exp.grid is not None and not _grid_left(exp):
            exp.closed = True  # its grid's last trial is made
        return Applied(trial=added)
    trial = _trial(exp, ev.trial_id, revive)
    if trial is None:
        return Applied()
    state.exploits.pop(trial.id, None)  # an exploit queues the trial with it applied
    if trial.status in FINAL:  # Tuner.restore runs it again
        trial.failures = 0
        trial.timed_out = False
    if ev.resources and ev.resources != trial.resources:  # ResourceChangingScheduler's
        trial.resources, trial.request = ev.resources, parse_request(ev.resources)
    trial.config = ev.config
    trial.error = trial.traceback = ""
    trial.stop_requested = False
    # Submitted queued it already (its first TrialQueued changes nothing); one that ran
    # before goes back in: in front (a crash, an exploit) or at the end (Tuner.restore).
    queued = trial.status == "PENDING"
    if not queued:
        transition(trial, "PENDING")
        _rewind(trial)
    if ev.front:
        if queued:
            _unqueue(exp, trial)
        exp.queue.appendleft(trial)
    elif not queued:
        exp.queue.append(trial)
    return Applied(trial=trial)


def _rewind(trial: Trial) -> None:
    """What a new attempt starts from: its latest checkpoint (or the beginning)."""
    trial.pid = 0
    trial.iteration = trial.checkpoint_iteration
    trial.time_total_s = trial.checkpoint_time


def _started(state: State, exp: Experiment, ev: p.TrialStarted, revive: Revive) -> Applied:
    trial = _trial(exp, ev.trial_id, revive)
    if trial is None:
        return Applied()
    if trial.status == "PENDING":  # live, admission has done this already
        _unqueue(exp, trial)
        transition(trial, "RUNNING")
    trial.attempt, trial.pid, trial.started_at = ev.attempt, ev.pid, ev.ts
    trial.dir = Path(ev.trial_dir) if ev.trial_dir else trial.dir
    trial.gpu_ids = ev.gpu_ids
    return Applied(trial=trial)


def _unqueue(exp: Experiment, trial: Trial) -> None:
    with contextlib.suppress(ValueError):
        exp.queue.remove(trial)


def position(row: object, trial: Trial) -> tuple[int, float]:
    """(training_iteration, time_total_s) a reported row puts the trial at."""
    if not isinstance(row, dict):
        return trial.iteration, trial.time_total_s
    iteration = row.get("training_iteration", trial.iteration + 1)
    total = row.get("time_total_s", trial.time_total_s)
    return (
        int(iteration) if isinstance(iteration, int | float) else trial.iteration,
        float(total) if isinstance(total, int | float) else trial.time_total_s,
    )


def _result(state: State, exp: Experiment, ev: p.TrialResult, revive: Revive) -> Applied:
    trial = _trial(exp, ev.trial_id, revive)
    if trial is None:
        return Applied()
    trial.last_result = ev.metrics
    trial.iteration, trial.time_total_s = position(p.unpack_opaque(ev.metrics), trial)
    return Applied(trial=trial)


def _checkpoint(state: State, exp: Experiment, ev: p.TrialCheckpoint, revive: Revive) -> Applied:
    trial = _trial(exp, ev.trial_id, revive)
    if trial is None:
        return Applied()
    trial.checkpoint = ev.path
    trial.checkpoint_iteration = ev.iteration
    trial.checkpoint_time = ev.time_total_s
    trial.checkpoint_offsets = (ev.result_bytes, ev.progress_bytes)
    spec = exp.spec
    trial.kept_checkpoints, dropped = select_kept(
        [*trial.kept_checkpoints, (ev.path, ev.score)],
        spec.num_to_keep,
        bool(spec.checkpoint_score_attribute),
        spec.checkpoint_score_order,
    )
    return Applied(trial=trial, dropped=dropped)


def _retrying(state: State, exp: Experiment, ev: p.TrialRetrying, revive: Revive) -> Applied:
    """A failed attempt with retries left, or one lost with its machinery, goes in front."""
    trial = _trial(exp, ev.trial_id, revive)
    if trial is None:
        return Applied()
    if ev.counted:
        trial.failures += 1
        trial.losses = 0
    else:
        trial.losses += 1
    if trial.status == "PENDING":
        _unqueue(exp, trial)
    else:
        transition(trial, "PENDING")
    _rewind(trial)
    exp.queue.appendleft(trial)
    return Applied(trial=trial)


def _finished(state: State, exp: Experiment, ev: p.TrialFinished, revive: Revive) -> Applied:
    trial = _trial(exp, ev.trial_id, revive)
    if trial is None:
        return Applied()
    if trial.status == "PENDING":
        _unqueue(exp, trial)  # cancelled or stopped before it started
    if trial.status != ev.status:
        transition(trial, ev.status)
    trial.error, trial.traceback, trial.timed_out = ev.error, ev.traceback, ev.timed_out
    trial.pid = 0
    state.exploits.pop(trial.id, None)
    return Applied(trial=trial)


Handler = Callable[[State, Experiment, Any, Revive], Applied]
_EVENTS: dict[type, Handler] = {
    p.ExperimentAccepted: _accepted,
    p.ExperimentFinished: _experiment_finished,
    p.TrialQueued: _queued,
    p.TrialStarted: _started,
    p.TrialResult: _result,
    p.TrialCheckpoint: _checkpoint,
    p.TrialRetrying: _retrying,
    p.TrialFinished: _finished,
}


# ------------------------------------------------------------------ control requests


def _control(state: State, rec: Control, revive: Revive) -> Applied:
    exp = state.experiments.get(rec.target)
    if exp is not None:
        if rec.action in ("cancel", "interrupt"):
            exp.closed = True
            if rec.action == "cancel":
                exp.cancelled = True
            else:
                exp.interrupted = True
            error = p.CANCELLED if rec.action == "cancel" else p.INTERRUPTED
            for t in exp.live():
                if t.status not in FINAL:
                    t.error = t.error or error
                    t.stop_requested = t.stop_requested or t.status == "RUNNING"
        elif rec.action == "close":
            exp.closed = True
        elif rec.action == "resume":
            exp.cancelled = exp.done = exp.interrupted = False  # its trainable file is where it was
            exp.closed = exp.closed and not rec.reopen and not _grid_left(exp)
            for trial_id in rec.restart:  # these start again from the beginning
                trial = _trial(exp, trial_id, revive)
                if trial is not None:
                    _forget_checkpoints(trial)
            if rec.path:  # its folder was moved: the trials to run again follow it
                for trial_id in rec.resume:
                    _trial(exp, trial_id, revive)
                move_experiment(exp, Path(rec.path))
        return Applied(experiment=exp)
    found = state.locate(rec.target)
    trial = None if found is None else found[0].trials[found[1]]
    if trial is None or trial.status in FINAL:
        return Applied()  # it has ended (or was archived): nothing to change
    if rec.action == "cancel":
        trial.stop_requested = True
        trial.error = trial.error or p.CANCELLED
    elif rec.action == "stop":
        trial.stop_requested = True
    elif rec.action == "exploit" and rec.config:
        state.exploits[trial.id] = Exploit(
            msgspec.Raw(rec.config), rec.checkpoint, rec.iteration, rec.time_total_s
        )
        # the attempt ends, then it applies (a queued trial is queued again with it at once)
        trial.stop_requested = trial.stop_requested or trial.status == "RUNNING"
        if rec.resources:
            trial.resources, trial.request = rec.resources, parse_request(rec.resources)
    return Applied(trial=trial)


def _forget_checkpoints(trial: Trial) -> None:
    trial.checkpoint = ""
    trial.checkpoint_iteration = 0
    trial.checkpoint_time = 0.0
    trial.checkpoint_offsets = (0, 0)
    trial.kept_checkpoints = []
