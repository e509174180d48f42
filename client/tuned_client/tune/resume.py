"""``fit()`` of a restored Tuner: running again what an experiment left to run.

If the daemon still has the experiment and it runs, this follows it; if it
has finished (or was stopped with Ctrl-C), the trials still to run are queued
again in it (``ResumeExperiment``: same ids, folders and checkpoints, the
restoring script's trainable); if the daemon lost it, they are submitted as a
new experiment in the same folder. A steered experiment (a searcher or a
scheduler) goes on with the searcher's and scheduler's saved state until it
has its ``num_samples`` trials.
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path
from typing import Any

import msgspec

from .. import protocol as p
from ..connection import Connection, DaemonError
from .analysis.loading import moved_trials
from .events_apply import view_from_info
from .fit_settings import FitSettings
from .follower import CANCEL_WAIT_S, Follower
from .link import open_connection
from .restore import load_state
from .result import TuneError
from .result_grid import ResultGrid
from .scheduler_state import load_scheduler
from .spec import needs_decisions, pack_trainable
from .steering import SteeredFollower, Steering


def unfinished(info: p.TrialInfo) -> bool:
    """Running or queued when the experiment stopped (Ctrl-C: "cancelled")."""
    return info.status in ("PENDING", "RUNNING") or (
        info.status == "ERROR" and info.error == "cancelled"
    )


def choose(
    infos: list[p.TrialInfo], resume_errored: bool, restart_errored: bool, resume_unfinished: bool
) -> tuple[list[str], list[str]]:
    """Ray's rules: which trials run again from their checkpoint, which from scratch."""
    resume: list[str] = []
    restart: list[str] = []
    for info in infos:
        if unfinished(info):
            if resume_unfinished:
                resume.append(info.trial_id)
        elif info.status == "ERROR":
            if restart_errored:
                restart.append(info.trial_id)
            elif resume_errored:
                resume.append(info.trial_id)
    return resume, restart


def fit_restored(fit: FitSettings, path: str, flags: dict[str, bool]) -> ResultGrid:
    state = load_state(path)
    assert state is not None  # Tuner.fit() runs a never-submitted Tuner afresh
    fit.socket = fit.socket or os.environ.get("TUNED_SOCKET") or state.socket
    steered = state.spec.open_ended
    started = time.time()
    conn, autostarted = open_connection(fit.socket)
    control: Connection | None = None
    try:
        reply = _ask(conn, state.experiment_id)
        if reply is not None and reply.cancelled and not reply.finished:
            _wait_finished(conn.socket_path, reply)  # its trials are still being stopped
            reply = _ask(conn, state.experiment_id)
        infos = reply.trials if reply is not None else moved_trials(state, Path(path))
        running = reply is not None and not reply.finished and not reply.cancelled
        # A steered search goes on unless it had ended by itself (the searcher was done).
        if reply is not None:
            cut_short = reply.cancelled or not reply.finished
        else:
            cut_short = state.cancelled or not state.finished
        resume, restart = ([], []) if running else choose(infos, **flags)
        if steered and reply is None:
            resume, restart = [], []  # new trial ids would be strangers to the searcher
        go_on = steered and (running or cut_short)
        if reply is not None and running:
            accepted = _accepted(state.experiment_id, reply.path, infos)
        elif reply is not None and (resume or restart or go_on):
            accepted = _request(
                conn,
                p.ResumeExperiment(
                    experiment_id=state.experiment_id,
                    resume=resume,
                    restart=restart,
                    reopen=go_on,
                    path=str(Path(path).absolute()),  # it may have been moved (as Ray's)
                    trainable=pack_trainable(fit, path),  # the restoring script's (as Ray's)
                ),
            )
        elif reply is None and (resume or restart or go_on):
            accepted = _submit_again(conn, fit, state, set(resume + restart), path)
        else:  # nothing left to run: the results as they are
            accepted = _accepted(state.experiment_id, str(Path(path).absolute()), infos)
        views = {info.trial_id: view_from_info(info) for info in infos}
        for trial_id in (*resume, *restart):  # queued again (their events come next)
            views[trial_id].status = "PENDING"
        if not running and not flags["resume_unfinished"]:
            for info in infos:  # as Ray: an unfinished trial not resumed ends TERMINATED
                if unfinished(info):
                    views[info.trial_id].finish("TERMINATED", "", "")
        decides = needs_decisions(fit)
        # The searcher and scheduler see what runs again, and add trials if it goes on.
        if not (steered and (go_on or running or resume or restart)):
            run = Follower(fit, conn, accepted, started, autostarted=autostarted, decides=decides)
            run.trials.update(views)
            _restore_callbacks(run, path)
            if not (resume or restart or running):
                return run.results()
        else:
            steered_run = SteeredFollower(
                fit, conn, accepted, started, autostarted=autostarted, decides=decides
            )
            steered_run.trials.update(views)
            _restore_callbacks(steered_run, path)
            control = Connection.open(conn.socket_path, autostart=False)
            _steer(steered_run, control, path, reply is None, more=go_on)
            run = steered_run
        if reply is not None:
            run.last_seq = reply.seq
        return run.follow(since=run.last_seq)
    finally:
        conn.close()
        if control is not None:
            control.close()


def _restore_callbacks(run: Follower, path: str) -> None:
    """The callbacks' saved state (``Callback.set_state``), before their ``setup``, as Ray."""
    if run.callbacks and run.callbacks.can_restore(path):
        run.callbacks.restore_from_dir(path)


def _steer(
    run: SteeredFollower, control: Connection, path: str, lost: bool, more: bool
) -> None:
    """The steering loop again, with the searcher and scheduler as they were saved;
    ``more``: the search had been cut short, it goes on to its ``num_samples``."""
    tc = run.fit.tune_config
    scheduler = load_scheduler(path, run.trials)
    if scheduler is not None:
        tc.scheduler = scheduler
    run.steering = Steering(
        run.fit,
        run,
        control,
        searcher_restored=run.fit.searcher_restored,
        scheduler_restored=scheduler is not None,
    )
    if lost:  # the daemon forgot them: they end here, and new trials take their place
        for view in run.trials.values():
            if not view.finished:
                view.finish("ERROR", "lost with the daemon's copy of the experiment", "")
                run.steering.searcher.on_trial_complete(view.trial_id, error=True)
    run.steering.closed = not more  # a search that had ended adds no trials
    run.setup_callbacks()
    run.steering.fill()


def _wait_finished(socket: Any, reply: p.ExperimentReply) -> None:
    """Until a cancelled experiment's last trial has stopped (a bounded wait)."""
    deadline = time.monotonic() + CANCEL_WAIT_S
    with Connection.open(socket, autostart=False) as conn:
        conn.send(p.Subscribe(experiment_id=reply.experiment_id, since=reply.seq))
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([conn.sock], [], [], left)
            if not readable or isinstance(conn.recv(), p.ExperimentFinished):
                return


def _ask(conn: Connection, experiment_id: str) -> p.ExperimentReply | None:
    try:
        got = conn.request(p.GetExperiment(experiment_id=experiment_id))
    except DaemonError as exc:
        if exc.code != "not_found":
            raise TuneError(exc.message) from None
        return None
    assert isinstance(got, p.ExperimentReply)
    return got


def _request(conn: Connection, request: Any) -> p.Accepted:
    try:
        accepted = conn.request(request)
    except DaemonError as exc:
        raise TuneError(exc.message) from None
    assert isinstance(accepted, p.Accepted)
    return accepted


def _accepted(exp_id: str, path: str, infos: list[p.TrialInfo]) -> p.Accepted:
    return p.Accepted(experiment_id=exp_id, path=path, trial_ids=[i.trial_id for i in infos])


def _submit_again(
    conn: Connection, fit: FitSettings, state: p.ExperimentState, again: set[str], path: str
) -> p.Accepted:
    """The daemon lost the experiment: the trials still to run go in a new one, same folder."""
    trials = [
        p.TrialSpec(tag=info.tag, config=info.config, resources=res)
        for info, res in zip(state.trials, _padded(state), strict=True)
        if info.trial_id in again
    ]
    folder = Path(path).expanduser().absolute()
    spec = msgspec.structs.replace(
        state.spec,
        name=folder.name,
        storage_path=str(folder.parent),
        trials=trials,
        trainable=pack_trainable(fit, str(folder)),
        env=dict(os.environ),  # the state file keeps no environment (it holds secrets)
    )
    return _request(conn, p.Submit(experiment=spec))


def _padded(state: p.ExperimentState) -> list[list[dict[str, float]]]:
    res: list[list[dict[str, float]]] = list(state.resources)
    return res + [[] for _ in range(len(state.trials) - len(res))]
