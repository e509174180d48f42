"""``fit()`` of a restored Tuner: running again what an experiment left to run.

If the daemon still has the experiment and it runs, this follows it (a
steered one, or one interrupted because its script went away, is waited for
to end first: one script drives it at a time); if it has finished (or was
stopped with Ctrl-C, or interrupted), the trials still to run are queued again
in it (``ResumeExperiment``: same ids, folders and checkpoints, the restoring
script's trainable); if the daemon lost it, they are submitted as a new
experiment in the same folder, each going on in its own trial folder from its
latest checkpoint there (``resume_point``), as Ray's restore does. A steered
experiment (a searcher or a scheduler) goes on with the searcher's and
scheduler's saved state until it has its ``num_samples`` trials.
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from .. import protocol as p
from ..connection import Connection, DaemonError
from ..gridplan import Grid
from .analysis.loading import moved_trials
from .events_apply import view_from_info
from .fit_settings import FitSettings
from .follower import CANCEL_WAIT_S, Follower
from .link import open_connection
from .restore import load_state
from .result import TuneError
from .result_grid import ResultGrid
from .resume_point import resume_point
from .scheduler_state import load_scheduler
from .spec import needs_decisions, pack_trainable
from .steering import SteeredFollower, drive


def unfinished(info: p.TrialInfo) -> bool:
    """Running or queued when the experiment stopped (Ctrl-C: "cancelled"; its script
    went away: "interrupted")."""
    return info.status in ("PENDING", "RUNNING") or (
        info.status == "ERROR" and info.error in (p.CANCELLED, p.INTERRUPTED)
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
    try:
        reply = _ask(conn, state.experiment_id)
        if reply is not None and not reply.finished and (steered or reply.interrupted):
            reply = _await_end(conn, reply)  # one script drives it at a time
        elif reply is not None and reply.cancelled and not reply.finished:
            _wait_finished(conn.socket_path, reply)  # its trials are still being stopped
            reply = _ask(conn, state.experiment_id)
        infos = reply.trials if reply is not None else moved_trials(state, Path(path))
        running = reply is not None and not reply.finished and not reply.cancelled
        # A steered search goes on unless it had ended by itself (the searcher was done).
        ended: p.ExperimentReply | p.ExperimentState = reply if reply is not None else state
        cut_short = ended.cancelled or ended.interrupted or not ended.finished
        resume, restart = ([], []) if running else choose(infos, **flags)
        go_on = (steered or _grid_left(state)) and (running or cut_short)
        views = {info.trial_id: view_from_info(info) for info in infos}
        aliases: dict[str, str] = {}
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
            again = [i for i in infos if i.trial_id in set(resume) | set(restart)]
            accepted = _submit_again(conn, fit, state, again, set(restart), path)
            for info in again:  # they run again under the new experiment's ids
                del views[info.trial_id]
            aliases = dict(
                zip(accepted.trial_ids[: len(again)], [i.trial_id for i in again], strict=True)
            )
        else:  # nothing left to run: the results as they are
            accepted = _accepted(state.experiment_id, str(Path(path).absolute()), infos)
        for trial_id in (*resume, *restart):  # queued again (their events come next)
            if trial_id in views:
                views[trial_id].status = "PENDING"
        if not running and not flags["resume_unfinished"]:
            for info in infos:  # as Ray: an unfinished trial not resumed ends TERMINATED
                if unfinished(info):
                    views[info.trial_id].finish("TERMINATED", "", "")
        since = reply.seq if reply is not None else 0
        # The searcher and scheduler see what runs again, and add trials if it goes on.
        if steered and (go_on or running or resume or restart):
            tc = fit.tune_config
            scheduler = load_scheduler(path, views)  # bound to the views the run holds
            if scheduler is not None:
                tc.scheduler = scheduler

            def prepare(run: SteeredFollower) -> None:
                run.trials.update(views)
                _restore_callbacks(run, path)

            return drive(
                fit,
                conn,
                accepted,
                started,
                autostarted=autostarted,
                prepare=prepare,
                steering={
                    "searcher_restored": fit.searcher_restored,
                    "scheduler_restored": scheduler is not None,
                    "added": len(infos),
                    "aliases": aliases,
                    "closed": not go_on,  # a search that had ended adds no trials
                },
                since=since,
            )
        run = Follower(
            fit, conn, accepted, started, autostarted=autostarted, decides=needs_decisions(fit)
        )
        run.trials.update(views)
        _restore_callbacks(run, path)
        if not (resume or restart or running):
            return run.results()
        run.last_seq = since
        return run.follow(since=since)
    finally:
        conn.close()


def _restore_callbacks(run: Follower, path: str) -> None:
    """The callbacks' saved state (``Callback.set_state``), before their ``setup``, as Ray."""
    if run.callbacks and run.callbacks.can_restore(path):
        run.callbacks.restore_from_dir(path)


def _await_end(conn: Connection, reply: p.ExperimentReply) -> p.ExperimentReply:
    """Wait for a running experiment to end before it is resumed, and say so.

    A steered experiment is driven by one script at a time: one whose script
    died ends (interrupted) once the daemon has given up on that script and its
    running trials have stopped at their next report; one whose script still
    runs ends when that script is done.
    """
    print(
        f"tuned: experiment {reply.experiment_id} is still running (its script drives it, or "
        "its trials are stopping since the script went away); waiting for it to end, then "
        "resuming it",
        file=sys.stderr,
    )
    with Connection.open(conn.socket_path, autostart=False) as watch:
        while not reply.finished:
            watch.send(p.Subscribe(experiment_id=reply.experiment_id, since=reply.seq))
            while True:
                msg = watch.recv()
                if isinstance(msg, p.Error):
                    raise TuneError(msg.message)
                if isinstance(msg, p.ExperimentFinished | p.Lagged):
                    break
            reply = conn.get_experiment(reply.experiment_id)
    return reply


def _wait_finished(socket: Any, reply: p.ExperimentReply) -> None:
    """Until a cancelled experiment's last trial has stopped (a bounded wait)."""
    deadline = time.monotonic() + CANCEL_WAIT_S
    with Connection.open(socket, autostart=False) as conn:
        conn.send(p.Subscribe(experiment_id=reply.experiment_id, since=reply.seq))
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([conn.sock], [], [], left)
            if not readable or isinstance(conn.recv(), p.ExperimentFinished):
                return


def _grid_left(state: p.ExperimentState) -> bool:
    """Whether its grid has points it made no trial of yet (Ray's generator goes on)."""
    return state.spec.grid is not None and Grid(state.spec.grid).total > len(state.trials)


def _ask(conn: Connection, experiment_id: str) -> p.ExperimentReply | None:
    try:
        return conn.get_experiment(experiment_id)
    except DaemonError as exc:
        if exc.code != "not_found":
            raise TuneError(exc.message) from None
        return None


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
    conn: Connection,
    fit: FitSettings,
    state: p.ExperimentState,
    again: list[p.TrialInfo],
    restart: set[str],
    path: str,
) -> p.Accepted:
    """The daemon lost the experiment: the trials still to run go in a new one, same folder.

    Each goes on in its own trial folder from its latest checkpoint (or from the
    start there, if it had none or is restarted), its result files cut back to
    that checkpoint's row. The folder is where the experiment is now, which may
    not be where it ran (a moved folder restores as Ray's does).
    """
    folder = Path(path).expanduser().absolute()
    bundles = dict(zip((i.trial_id for i in state.trials), _padded(state), strict=True))
    trials = [
        p.TrialSpec(
            tag=info.tag,
            config=info.config,
            resources=bundles.get(info.trial_id, []),
            resume=_resume_of(
                _trial_folder(info, folder, state.spec.trainable_name),
                from_start=info.trial_id in restart,
            ),
        )
        for info in again
    ]
    grid = state.spec.grid
    if grid is not None:  # it goes on with the points it had not made trials of
        made = len(state.trials) - grid.first_trial
        grid = msgspec.structs.replace(grid, start=grid.start + made)
    spec = msgspec.structs.replace(
        state.spec,
        grid=grid,
        name=folder.name,
        storage_path=str(folder.parent),
        trials=trials,
        trainable=pack_trainable(fit, str(folder)),
        env=dict(os.environ),  # the state file keeps no environment (it holds secrets)
    )
    return _request(conn, p.Submit(experiment=spec))


def _trial_folder(info: p.TrialInfo, folder: Path, trainable_name: str) -> Path | None:
    """The trial's folder in ``folder``, if it has one there.

    The state file may be older than the folder (it is written every half
    second at most): a trial that had just started may be PENDING there, with
    no path. Its folder's name starts with its trainable's name and its id.
    """
    if info.path and (folder / Path(info.path).name).is_dir():
        return folder / Path(info.path).name
    prefix = f"{trainable_name}_{info.trial_id}_"
    found = [d for d in folder.glob(f"{prefix}*") if d.is_dir()]
    return found[0] if len(found) == 1 else None


def _resume_of(trial_dir: Path | None, *, from_start: bool) -> p.TrialResume | None:
    """Where a trial goes on: in its folder, from its latest checkpoint there."""
    if trial_dir is None:
        return None  # it never started (or its folder is gone): afresh, in a folder of its own
    return p.TrialResume(dir=str(trial_dir)) if from_start else resume_point(trial_dir)


def _padded(state: p.ExperimentState) -> list[list[dict[str, float]]]:
    res: list[list[dict[str, float]]] = list(state.resources)
    return res + [[] for _ in range(len(state.trials) - len(res))]
