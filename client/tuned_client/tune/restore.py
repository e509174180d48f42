"""``Tuner.restore``: picking an experiment up again from its folder.

It reads ``experiment_state.msgpack``, which the daemon keeps in the
experiment's folder. If the daemon still has the experiment and it is running,
restore just follows it; if it has finished (or was stopped with Ctrl-C, or
interrupted because the script driving it went away), the trials still to
run are queued again in it (``ResumeExperiment``: same ids, folders and
checkpoints); if the daemon lost it (its journal gone), they are submitted as
a new experiment in the same folder, each going on in its own trial folder
from its latest checkpoint (``TrialResume``), as Ray's restore does from
``experiment_state`` and the trial folders.

An experiment steered from its script (a searcher or scheduler: ``open_ended``)
goes on with the searcher and scheduler saved in its folder
(``steering_state``): restore waits for a running one to end first (its
trials stop once its driver is gone), then drives it, re-opened for new trials
if its search had not ended.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec

from .. import protocol as p
from ..connection import Connection, DaemonError
from .events_apply import view_from_info
from .fit_settings import FitSettings
from .follower import Follower
from .link import open_connection
from .result import ResultGrid, TuneError
from .resume_point import resume_point
from .spec import needs_decisions
from .steering import Resumed, drive
from .trial import TrialView

# ------------------------------------------------------------------ Tuner.restore


def state_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser() / p.EXPERIMENT_STATE_FILE


def can_restore(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is an experiment folder that ``Tuner.restore`` can continue."""
    return state_path(path).is_file()


def load_state(path: str | os.PathLike[str]) -> p.ExperimentState:
    file = state_path(path)
    if not file.is_file():
        raise ValueError(
            f"{path} is not a tuned experiment folder (no {p.EXPERIMENT_STATE_FILE}); "
            "pass the folder fit() printed as its logdir"
        )
    try:
        return msgspec.msgpack.decode(file.read_bytes(), type=p.ExperimentState)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{file} is damaged: {exc}") from exc


def choose(
    infos: list[p.TrialInfo], resume_errored: bool, restart_errored: bool, resume_unfinished: bool
) -> tuple[list[str], list[str]]:
    """Ray's rules: which trials run again from their checkpoint, which from scratch."""
    resume: list[str] = []
    restart: list[str] = []
    for info in infos:
        unfinished = info.status in ("PENDING", "RUNNING") or (
            info.status == "ERROR" and info.error in (p.CANCELLED, p.INTERRUPTED)
        )
        if unfinished:
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
    socket = fit.socket or os.environ.get("TUNED_SOCKET") or state.socket
    fit.socket = socket
    folder = Path(path).expanduser()
    steered = state.spec.open_ended  # its searcher or scheduler ran in its script
    started = time.time()
    conn, autostarted = open_connection(socket)
    try:
        reply: p.ExperimentReply | None = None
        try:
            reply = conn.get_experiment(state.experiment_id)
        except DaemonError as exc:
            if exc.code != "not_found":
                raise TuneError(exc.message) from None
        if reply is not None and not reply.finished and (steered or reply.interrupted):
            reply = _await_end(conn, reply)
        if reply is not None and not reply.finished and not reply.cancelled:
            accepted = _accepted(reply.experiment_id, reply.path, reply.trials)
            run = Follower(
                fit, conn, accepted, started, autostarted=autostarted, decides=needs_decisions(fit)
            )
            run.trials.update(_views(reply.trials))
            run.last_seq = reply.seq
            return run.follow(since=run.last_seq)
        ended = reply if reply is not None else state
        infos = reply.trials if reply is not None else state.trials
        resume, restart = choose(infos, **flags)
        # A steered search goes on unless it had ended by itself.
        search_open = steered and (ended.cancelled or ended.interrupted or not ended.finished)
        if not (resume or restart or search_open):
            accepted = _accepted(state.experiment_id, str(folder), infos)
            run = Follower(fit, conn, accepted, started, autostarted=autostarted)
            run.trials.update(_views(infos))
            return run.results()
        views = _views(infos)
        since = 0
        if reply is not None:
            request = p.ResumeExperiment(
                experiment_id=state.experiment_id,
                resume=resume,
                restart=restart,
                reopen=search_open,
            )
            accepted = _request(conn, request)
            resumed = Resumed(added=len(infos), open=search_open)
            since = reply.seq
        else:
            again = [i for i in infos if i.trial_id in set(resume) | set(restart)]
            accepted = _submit_again(conn, fit, state, folder, again, set(restart), steered)
            for info in again:  # they run again under the new experiment's ids
                del views[info.trial_id]
            aliases = dict(zip(accepted.trial_ids, [i.trial_id for i in again], strict=True))
            resumed = Resumed(len(again), counted=len(infos) - len(again), aliases=aliases)
        if steered:
            return drive(
                fit, conn, accepted, started, autostarted=autostarted, resumed=resumed,
                views=views, since=since,
            )  # fmt: skip
        run = Follower(
            fit, conn, accepted, started, autostarted=autostarted, decides=needs_decisions(fit)
        )
        run.trials.update(views)
        run.last_seq = since
        return run.follow(since=since)
    finally:
        conn.close()


def _views(infos: list[p.TrialInfo]) -> dict[str, TrialView]:
    return {info.trial_id: view_from_info(info) for info in infos}


def _accepted(exp_id: str, path: str, infos: list[p.TrialInfo]) -> p.Accepted:
    return p.Accepted(experiment_id=exp_id, path=path, trial_ids=[i.trial_id for i in infos])


def _request(conn: Connection, request: p.Request) -> p.Accepted:
    try:
        accepted = conn.request(request)
    except DaemonError as exc:
        raise TuneError(exc.message) from None
    assert isinstance(accepted, p.Accepted)
    return accepted


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


def _submit_again(
    conn: Connection,
    fit: FitSettings,
    state: p.ExperimentState,
    folder: Path,
    again: list[p.TrialInfo],
    restart: set[str],
    open_ended: bool,
) -> p.Accepted:
    """The daemon lost the experiment: the trials still to run go in a new one, same folder.

    Each goes on in its own trial folder from its latest checkpoint (or from the
    start there, if it had none or is restarted), its result files cut back to
    that checkpoint's row. The folder is where the experiment is now, which may
    not be where it ran (a moved folder restores as Ray's does).
    """
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
    spec = msgspec.structs.replace(
        state.spec,
        name=folder.name,
        storage_path=str(folder.parent),
        trials=trials,
        trainable=cloudpickle.dumps(fit.trainable),
        env=dict(os.environ),  # the state file keeps no environment (it holds secrets)
        open_ended=open_ended,
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


def restore_flags(**flags: Any) -> dict[str, bool]:
    return {k: bool(v) for k, v in flags.items()}
