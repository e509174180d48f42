"""Start-up after a crash: rebuild the daemon's state from the journal.

The journal holds every accepted experiment (``Submitted``), every control
request (``Control``) and every event, in order. Replaying them gives each
trial its last known state. Trials that were RUNNING when the daemon died are
not failures: whatever is left of their processes is killed, and they go back
to the front of their queue to resume from their latest checkpoint, their
result files cut back to the rows at that checkpoint (so no row repeats and
none is missing). The event sequence and the recent history continue, so a
client that resubscribes from the last event it saw misses nothing.

This module also keeps ``experiment_state.msgpack`` in each experiment's
folder: what ``Tuner.restore`` needs if the daemon no longer has the experiment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import msgspec
import psutil
import structlog
from tuned_client import protocol as p

from . import snapshots
from .daemon import Daemon
from .journal import Control, Journal, Submitted
from .ledger import ImpossibleRequest, ResourceError, parse_request
from .results import select_kept
from .trials import FINAL, Experiment, Trial

log = structlog.get_logger("tuned.recovery")

# Seconds between spawning a trial and journalling TrialStarted, at most; also
# the clock granularity of a process's start time as psutil reads it.
START_SLACK_S = 1.0
STATE_WRITE_INTERVAL_S = 0.5


def recover(daemon: Daemon) -> None:
    """Replay the journal into ``daemon``, clean up after the dead one, open the journal."""
    started: dict[str, p.TrialStarted] = {}
    last_seq = 0
    count = 0
    for record in Journal.replay(daemon.journal.path):
        count += 1
        if isinstance(record, Submitted):
            _submitted(daemon, record)
            continue
        if isinstance(record, Control):
            _control(daemon, record)
            continue
        last_seq = max(last_seq, record.seq)
        daemon.bus.publish(record)  # the history a resubscribing client catches up from
        trial = daemon.trials.get(getattr(record, "trial_id", ""))
        if isinstance(record, p.TrialStarted) and trial is not None:
            started[trial.id] = record
        _apply(daemon, record, trial)
    daemon.bus.seq = max(daemon.bus.seq, last_seq)
    daemon.journal.open()
    if count:
        log.info("journal replayed", records=count, last_seq=last_seq)
    _resume_unfinished(daemon, started)


def _submitted(daemon: Daemon, rec: Submitted) -> None:
    spec = rec.spec
    trial_specs, spec.trials = spec.trials, []
    daemon._exp_seq += 1
    exp = Experiment(rec.experiment_id, spec, Path(rec.path), daemon._exp_seq)
    exp.closed = not spec.open_ended
    daemon.experiments[exp.id] = exp
    for trial_id, ts in zip(rec.trial_ids, trial_specs, strict=True):
        _new_trial(daemon, exp, trial_id, ts.tag, ts.config, ts.resources)


def _new_trial(
    daemon: Daemon,
    exp: Experiment,
    trial_id: str,
    tag: str,
    config: msgspec.Raw,
    resources: list[dict[str, float]],
) -> Trial:
    bundles = resources or exp.spec.resources
    trial = Trial(
        id=trial_id,
        index=len(exp.trials),
        tag=tag,
        experiment=exp,
        config=config,
        request=parse_request(bundles),
        resources=bundles,
    )
    exp.trials.append(trial)
    daemon.trials[trial.id] = trial
    return trial


def _control(daemon: Daemon, rec: Control) -> None:
    exp = daemon.experiments.get(rec.target)
    trial = daemon.trials.get(rec.target)
    if rec.action == "cancel":
        if exp is not None:
            exp.cancelled = exp.closed = True
            for t in exp.trials:
                t.error = t.error or ("cancelled" if t.status not in FINAL else "")
        elif trial is not None:
            trial.stop_requested = True
            trial.error = trial.error or "cancelled"
    elif rec.action == "close" and exp is not None:
        exp.closed = True
    elif rec.action == "stop" and trial is not None:
        trial.stop_requested = True
    elif rec.action == "resume" and exp is not None:
        exp.cancelled = exp.done = False
        for t in exp.trials:
            if t.id in rec.restart:
                _forget_checkpoint(t)
                t.kept_checkpoints = []


def _forget_checkpoint(trial: Trial) -> None:
    trial.checkpoint = ""
    trial.checkpoint_iteration = 0
    trial.checkpoint_time = 0.0
    trial.checkpoint_offsets = (0, 0)


def _set_status(trial: Trial, status: p.TrialStatus) -> None:
    """Replay sets statuses directly: counters are recomputed once at the end."""
    trial.status = status


def _apply(daemon: Daemon, ev: p.Event, trial: Trial | None) -> None:
    if isinstance(ev, p.ExperimentAccepted):
        exp = daemon.experiments.get(ev.experiment_id)
        if exp is not None:
            exp.started_at = ev.ts
        return
    if isinstance(ev, p.ExperimentFinished):
        exp = daemon.experiments.get(ev.experiment_id)
        if exp is not None:
            exp.done, exp.cancelled = True, ev.cancelled
        return
    if isinstance(ev, p.TrialQueued) and trial is None:
        exp = daemon.experiments.get(ev.experiment_id)
        if exp is not None:  # added with AddTrials
            _new_trial(daemon, exp, ev.trial_id, ev.tag, ev.config, ev.resources)
        return
    if trial is None:
        return
    if isinstance(ev, p.TrialQueued):
        if trial.status in FINAL:  # Tuner.restore queued it again
            trial.failures = 0
        trial.config = ev.config  # PBT's exploit queues it again with a new config
        _set_status(trial, "PENDING")
        trial.error = trial.traceback = ""
        trial.stop_requested = False
    elif isinstance(ev, p.TrialStarted):
        _set_status(trial, "RUNNING")
        trial.attempt, trial.pid = ev.attempt, ev.pid
        trial.started_at = ev.ts
        trial.dir = Path(ev.trial_dir) if ev.trial_dir else trial.dir
        trial.gpu_ids = ev.gpu_ids
    elif isinstance(ev, p.TrialResult):
        trial.last_result = ev.metrics
        row = p.unpack_opaque(ev.metrics)
        if isinstance(row, dict):
            trial.iteration = int(row.get("training_iteration", trial.iteration + 1))
            trial.time_total_s = float(row.get("time_total_s", trial.time_total_s))
    elif isinstance(ev, p.TrialCheckpoint):
        trial.checkpoint = ev.path
        trial.checkpoint_iteration = ev.iteration
        trial.checkpoint_time = ev.time_total_s
        trial.checkpoint_offsets = (ev.result_bytes, ev.progress_bytes)
        spec = trial.experiment.spec
        trial.kept_checkpoints, _ = select_kept(
            [*trial.kept_checkpoints, (ev.path, ev.score)],
            spec.num_to_keep,
            bool(spec.checkpoint_score_attribute),
            spec.checkpoint_score_order,
        )
    elif isinstance(ev, p.TrialRetrying):
        _set_status(trial, "PENDING")
        trial.failures += 1
        trial.pid = 0
    elif isinstance(ev, p.TrialFinished):
        _set_status(trial, ev.status)
        trial.error, trial.traceback, trial.timed_out = ev.error, ev.traceback, ev.timed_out
        trial.pid = 0


def _resume_unfinished(daemon: Daemon, started: dict[str, p.TrialStarted]) -> None:
    """Kill what the dead daemon left running; queue unfinished trials; finish the rest."""
    kill_leftovers(
        [
            (t.id, started[t.id].pid, started[t.id].ts)
            for t in daemon.trials.values()
            if t.status == "RUNNING" and t.id in started and not t.experiment.done
        ]
    )
    for exp in daemon.experiments.values():
        exp.running = 0
        exp.finished = sum(t.status in FINAL for t in exp.trials)
        if exp.done:
            continue
        front: list[Trial] = []
        back: list[Trial] = []
        for trial in exp.trials:
            if trial.status == "RUNNING":
                trial.status = "PENDING"
                trial.pid = 0
                trial.iteration = trial.checkpoint_iteration
                trial.time_total_s = trial.checkpoint_time
                front.append(trial)
            elif trial.status == "PENDING":
                (front if trial.attempt else back).append(trial)
        exp.queue.extend(front + back)
        for trial in front:
            if trial.attempt:
                daemon.emit(
                    p.TrialQueued,
                    experiment_id=exp.id,
                    trial_id=trial.id,
                    name=trial.name,
                    config=trial.config,
                    attempt=trial.attempt,
                    tag=trial.tag,
                )
        for trial in list(exp.queue):
            _settle(daemon, exp, trial)
        if not exp.done:
            daemon.scheduler.add(exp)
            log.info("experiment resumed", experiment=exp.id, queued=len(exp.queue))
        daemon.maybe_finish(exp)
    daemon.wake()


def _settle(daemon: Daemon, exp: Experiment, trial: Trial) -> None:
    """End a queued trial now if it was cancelled or stopped, or no longer fits here."""
    status: p.TrialStatus | None = None
    if exp.cancelled or trial.error == "cancelled":
        trial.error, status = "cancelled", "ERROR"
    elif trial.stop_requested:
        status = "TERMINATED"
    else:
        try:
            daemon.ledger.check(trial.request)
        except (ImpossibleRequest, ResourceError) as exc:  # the daemon restarted smaller
            trial.error, status = f"cannot run on this daemon any more: {exc}", "ERROR"
    if status is not None:
        exp.queue.remove(trial)
        daemon.finish(trial, status)


def kill_leftovers(targets: list[tuple[str, int, float]]) -> int:
    """SIGKILL every process of the trials a dead daemon had started; returns how many.

    ``targets`` holds ``(trial_id, pid, TrialStarted.ts)``. A process is the
    trial's if it started after the trial did and is the trial's leader (its
    pid, started no later than ``TrialStarted`` was journalled: a reused pid is
    younger), carries the trial's ``TUNED_TRIAL_ID``, or is in the leader's
    process group. One scan of the process table serves every trial.
    """
    if not targets:
        return 0
    by_id = {trial_id: (pid, ts) for trial_id, pid, ts in targets}
    by_pid = {pid: ts for _trial_id, pid, ts in targets}
    oldest = min(ts for _t, _p, ts in targets)
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["create_time", "status"]):
        created = proc.info.get("create_time")
        if created is None or created < oldest - START_SLACK_S or proc.pid == os.getpid():
            continue
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue  # already dead, waiting for its parent to reap it
        if _is_trials(proc, created, by_id, by_pid):
            found.append(proc)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    _wait_gone(found, timeout=2.0)
    if found:
        log.info("killed what a dead daemon left running", processes=len(found))
    return len(found)


def _is_trials(
    proc: psutil.Process,
    created: float,
    by_id: dict[str, tuple[int, float]],
    by_pid: dict[int, float],
) -> bool:
    if proc.pid in by_pid:
        ts = by_pid[proc.pid]
        return ts - START_SLACK_S <= created <= ts + START_SLACK_S
    env: dict[str, str] = {}
    with contextlib.suppress(psutil.Error):
        env = proc.environ()
    owner = by_id.get(env.get("TUNED_TRIAL_ID", ""))
    if owner is not None:
        return created >= owner[1] - START_SLACK_S
    if "TUNED_TRIAL_ID" in env:
        return False  # another trial's, or another daemon's
    try:
        pgid = os.getpgid(proc.pid)
    except OSError:
        return False
    return pgid in by_pid and created >= by_pid[pgid] - START_SLACK_S


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until each process is gone or a zombie (not our children: no wait() to await)."""
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        still = []
        for proc in pending:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    still.append(proc)
            except psutil.NoSuchProcess:
                pass
        pending = still
        if pending:
            time.sleep(0.01)


# ------------------------------------------------------------------ experiment_state file


def state_of(daemon: Daemon, exp: Experiment) -> p.ExperimentState:
    reply = snapshots.experiment_reply(daemon, exp.id)
    return p.ExperimentState(
        experiment_id=exp.id,
        socket=str(daemon.settings.socket_path),
        spec=msgspec.structs.replace(exp.spec, trials=[], trainable=b""),
        trials=reply.trials,
        resources=[t.resources for t in exp.trials],
        finished=exp.done,
        cancelled=exp.cancelled,
    )


def write_state(daemon: Daemon, exp: Experiment, *, force: bool = False) -> None:
    """Rewrite the experiment's state file (atomically), at most every half second.

    Forced at submit and when the experiment finishes; in between, a stale file
    only means ``Tuner.restore`` reruns a trial the daemon had just finished,
    and only when the daemon has lost the experiment too.
    """
    now = time.monotonic()
    if not force and now - exp.state_written < STATE_WRITE_INTERVAL_S:
        return
    exp.state_written = now
    path = exp.path / p.EXPERIMENT_STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.msgpack.encode(state_of(daemon, exp)))
        os.replace(tmp, path)
    except OSError as exc:  # disk full: the old state file stays whole, the daemon serves on
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("could not write the experiment state", experiment=exp.id, error=str(exc))
