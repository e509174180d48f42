"""Picking an experiment up again: after a lost connection, and with ``Tuner.restore``.

``fit()`` survives a daemon restart: it reconnects (starting the daemon again
if it had started it), resubscribes from the last event it saw, and when the
daemon no longer holds those events, rebuilds its trial views from a snapshot.

``Tuner.restore(path, ...)`` reads ``experiment_state.msgpack``, which the
daemon keeps in the experiment's folder. If the daemon still has the
experiment and it is running, restore just follows it; if it has finished
(or was stopped with Ctrl-C), the trials still to run are queued again in it
(``ResumeExperiment``: same ids, folders and checkpoints); if the daemon lost
it, they are submitted as a new experiment in the same folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import msgspec

from .. import protocol as p
from ..connection import Connection, DaemonError, DaemonUnavailable, TunedError
from ..framing import FrameError
from .events_apply import view_from_info
from .result import ResultGrid, TuneError

if TYPE_CHECKING:
    from .tuner import Tuner, _Run

# How long fit() waits for a daemon that went away to come back.
RECONNECT_TIMEOUT_S = float(os.environ.get("TUNED_RECONNECT_TIMEOUT", "120"))


def open_connection(socket_path: str | None) -> tuple[Connection, bool]:
    """Connect, starting a daemon if none listens; says whether we started it."""
    try:
        return Connection.open(socket_path, autostart=False), False
    except DaemonUnavailable:
        return Connection.open(socket_path, autostart=True), True


def reconnect(run: _Run) -> Connection:
    """A new connection after the daemon went away, subscribed from the last seen event."""
    run.conn.close()
    deadline = time.monotonic() + RECONNECT_TIMEOUT_S
    delay = 0.02
    while True:
        try:
            conn = Connection.open(run.tuner._socket, autostart=run.autostarted)
            break
        except (TunedError, FrameError, OSError) as exc:
            if time.monotonic() > deadline:
                raise TuneError(
                    f"lost the tuned daemon and it did not come back ({exc}); the experiment "
                    f"goes on when it restarts: Tuner.restore({run.accepted.path!r}, ...)"
                ) from exc
            time.sleep(delay)  # waiting for another process to listen: nothing to await
            delay = min(delay * 2, 0.5)
    conn.send(p.Subscribe(experiment_id=run.accepted.experiment_id, since=run.last_seq))
    return conn


def resync(run: _Run) -> bool:
    """Rebuild the trial views from a snapshot after ``Lagged``; True if already finished."""
    run.conn.close()
    run.conn = Connection.open(run.tuner._socket, autostart=run.autostarted)
    reply = run.conn.request(p.GetExperiment(experiment_id=run.accepted.experiment_id))
    assert isinstance(reply, p.ExperimentReply)
    absorb(run, reply)
    if reply.finished:
        return True
    run.conn.send(p.Subscribe(experiment_id=reply.experiment_id, since=reply.seq))
    return False


def absorb(run: _Run, reply: p.ExperimentReply) -> None:
    for info in reply.trials:
        run.trials[info.trial_id] = view_from_info(info)
    run.last_seq = max(run.last_seq, reply.seq)


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


def fit_restored(tuner: Tuner, path: str, flags: dict[str, bool]) -> ResultGrid:
    from .tuner import _Run

    state = load_state(path)
    socket = tuner._socket or os.environ.get("TUNED_SOCKET") or state.socket
    tuner._socket = socket
    started = time.time()
    conn, autostarted = open_connection(socket)
    try:
        reply: p.ExperimentReply | None = None
        try:
            got = conn.request(p.GetExperiment(experiment_id=state.experiment_id))
            assert isinstance(got, p.ExperimentReply)
            reply = got
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
                accepted = _submit_again(conn, tuner, state, set(resume + restart))
        run = _Run(tuner, conn, accepted, started)
        run.autostarted = autostarted
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
    conn: Connection, tuner: Tuner, state: p.ExperimentState, again: set[str]
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
        trainable=cloudpickle.dumps(tuner.trainable),
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
