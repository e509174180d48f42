"""``Tuner.restore``: picking an experiment up again from its folder.

It reads ``experiment_state.msgpack``, which the daemon keeps in the
experiment's folder. If the daemon still has the experiment and it is running,
restore just follows it; if it has finished (or was stopped with Ctrl-C), the
trials still to run are queued again in it (``ResumeExperiment``: same ids,
folders and checkpoints); if the daemon lost it, they are submitted as a new
experiment in the same folder.
"""

from __future__ import annotations

import os
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
from .spec import needs_decisions

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
            info.status == "ERROR" and info.error == "cancelled"
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
    started = time.time()
    conn, autostarted = open_connection(socket)
    try:
        reply: p.ExperimentReply | None = None
        try:
            reply = conn.get_experiment(state.experiment_id)
        except DaemonError as exc:
            if exc.code != "not_found":
                raise TuneError(exc.message) from None
        infos = reply.trials if reply is not None else state.trials
        if reply is not None and not reply.finished and not reply.cancelled:
            resume: list[str] = []
            restart: list[str] = []
            accepted = _accepted(reply.experiment_id, reply.path, infos)
        else:
            resume, restart = choose(infos, **flags)
            accepted = _accepted(state.experiment_id, str(Path(path)), infos)
            if reply is not None and (resume or restart):
                got_acc = conn.request(
                    p.ResumeExperiment(
                        experiment_id=state.experiment_id, resume=resume, restart=restart
                    )
                )
                assert isinstance(got_acc, p.Accepted)
                accepted = got_acc
            elif reply is None and (resume or restart):
                accepted = _submit_again(conn, fit, state, set(resume + restart))
        run = Follower(
            fit, conn, accepted, started, autostarted=autostarted, decides=needs_decisions(fit)
        )
        for info in infos:
            run.trials[info.trial_id] = view_from_info(info)
        if not (resume or restart) and (reply is None or reply.finished):
            return run.results()
        if reply is not None:
            run.last_seq = reply.seq
        return run.follow(since=run.last_seq)
    finally:
        conn.close()


def _accepted(exp_id: str, path: str, infos: list[p.TrialInfo]) -> p.Accepted:
    return p.Accepted(experiment_id=exp_id, path=path, trial_ids=[i.trial_id for i in infos])


def _submit_again(
    conn: Connection, fit: FitSettings, state: p.ExperimentState, again: set[str]
) -> p.Accepted:
    """The daemon lost the experiment: the trials still to run go in a new one, same folder."""
    trials = [
        p.TrialSpec(tag=info.tag, config=info.config, resources=res)
        for info, res in zip(state.trials, _padded(state), strict=True)
        if info.trial_id in again
    ]
    spec = msgspec.structs.replace(
        state.spec,
        trials=trials,
        trainable=cloudpickle.dumps(fit.trainable),
        env=dict(os.environ),  # the state file keeps no environment (it holds secrets)
    )
    try:
        accepted = conn.request(p.Submit(experiment=spec))
    except DaemonError as exc:
        raise TuneError(exc.message) from None
    assert isinstance(accepted, p.Accepted)
    return accepted


def _padded(state: p.ExperimentState) -> list[list[dict[str, float]]]:
    res: list[list[dict[str, float]]] = list(state.resources)
    return res + [[] for _ in range(len(state.trials) - len(res))]


def restore_flags(**flags: Any) -> dict[str, bool]:
    return {k: bool(v) for k, v in flags.items()}
