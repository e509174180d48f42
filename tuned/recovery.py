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
from collections.abc import Generator
from pathlib import Path

import anyio
import msgspec
import psutil
import structlog
from tuned_client import protocol as p

from . import archive
from .daemon import Daemon
from .errors import Refused
from .journal import Control, Journal, Submitted
from .ledger import ImpossibleRequest, ResourceError, parse_request
from .results import select_kept
from .trials import FINAL, Experiment, Trial, share_spec

log = structlog.get_logger("tuned.recovery")

# Seconds between spawning a trial and journalling TrialStarted, at most; also
# the clock granularity of a process's start time as psutil reads it.
START_SLACK_S = 1.0
STATE_WRITE_INTERVAL_S = 0.5
STATE_WRITE_COST_RATIO = 20.0  # seconds between state writes per second one takes
STATE_STEPS_FROM = 10_000  # trials from which the periodic state write goes in steps
STATE_CHUNK_BYTES = 1 << 18  # a piece of the state file: about 800 trials


def recover(daemon: Daemon) -> None:
    """Replay the journal into ``daemon``, clean up after the dead one, open the journal.

    Finished trials are then archived (``tuned.archive``): the replay needs them
    all in memory, the daemon afterwards only the unfinished ones.
    """
    archive.reset(daemon)
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
    for exp in daemon.experiments.values():
        archive.evict_finished(daemon, exp)


def _submitted(daemon: Daemon, rec: Submitted) -> None:
    spec = rec.spec
    trial_specs, spec.trials = spec.trials, []
    spec.trainable = b""  # trainable.pkl holds it since submit; trials load it from there
    share_spec(spec)
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
            for t in exp.live():
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
        for t in exp.live():
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
        if ev.resources and ev.resources != trial.resources:  # ResourceChangingScheduler's
            with contextlib.suppress(Refused):  # no longer fits this machine: keep the old
                trial.request = daemon._request_for(ev.resources, f"trial {trial.tag}")
                trial.resources = ev.resources
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
        exp.recount()
        exp.running = 0  # those RUNNING go back to the queue below
        if exp.done:
            continue
        front: list[Trial] = []
        back: list[Trial] = []
        for trial in exp.live():
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


def state_chunks(daemon: Daemon, exp: Experiment) -> Generator[bytes]:
    """``experiment_state.msgpack`` (a ``p.ExperimentState``) in pieces of ``STATE_CHUNK_BYTES``.

    Encoded by hand around the trials, which are copied as the archive holds
    them (``archive.trial_rows``): memory stays at a piece and the per-trial
    resources, however many trials there are.
    """
    head: list[tuple[str, object]] = [
        ("experiment_id", exp.id),
        ("socket", str(daemon.settings.socket_path)),
        ("spec", msgspec.structs.replace(exp.spec, trials=[], trainable=b"")),
        ("finished", exp.done),
        ("cancelled", exp.cancelled),
    ]
    n = len(exp.trials)  # trials added while this is written are in the next one
    buf = bytearray(archive.map_header(len(head) + 2))
    for key, value in head:
        buf += archive.encode(key) + archive.encode(value)
    buf += archive.encode("trials") + archive.array_header(n)
    resources: list[bytes] = []
    same: dict[bytes, bytes] = {}  # most trials share their bundles: keep one copy
    for info, bundles in archive.trial_rows(exp, n):
        buf += info
        raw = bytes(bundles)
        resources.append(same.setdefault(raw, raw))
        if len(buf) >= STATE_CHUNK_BYTES:
            yield bytes(buf)
            buf.clear()
    buf += archive.encode("resources") + archive.array_header(n)
    for raw in resources:
        buf += raw
        if len(buf) >= STATE_CHUNK_BYTES:
            yield bytes(buf)
            buf.clear()
    yield bytes(buf)


def state_of(daemon: Daemon, exp: Experiment) -> p.ExperimentState:
    """The state file's contents, decoded (for tests and tools)."""
    return msgspec.msgpack.decode(b"".join(state_chunks(daemon, exp)), type=p.ExperimentState)


def write_state(daemon: Daemon, exp: Experiment, *, force: bool = False) -> None:
    """Rewrite the experiment's state file (atomically), at most every half second.

    Forced at submit and when the experiment finishes; in between, a stale file
    only means ``Tuner.restore`` reruns a trial the daemon had just finished,
    and only when the daemon has lost the experiment too.

    A write costs O(trials), so its cost is bounded two ways: the writes are
    spaced ``STATE_WRITE_COST_RATIO`` times as long as the last one kept the
    loop busy (under 5 % of the daemon's time, however many trials), and an
    experiment of more than ``STATE_STEPS_FROM`` trials is written in steps,
    a piece per turn of the loop, so that a million trials never stall it.
    """
    due = exp.state_written + max(STATE_WRITE_INTERVAL_S, exp.state_every)
    if force:
        exp.state_generation += 1  # a write in steps now under way is out of date
    elif exp.state_writing or time.monotonic() < due:
        return
    if force or len(exp.trials) <= STATE_STEPS_FROM or daemon.tg is None:
        _write_now(daemon, exp)
        return
    exp.state_writing = True
    daemon.tg.start_soon(_write_in_steps, daemon, exp, name=f"state of {exp.id}")


def _write_now(daemon: Daemon, exp: Experiment) -> None:
    started = time.monotonic()
    path = exp.path / p.EXPERIMENT_STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            for chunk in state_chunks(daemon, exp):
                f.write(chunk)
        os.replace(tmp, path)
    except OSError as exc:  # disk full: the old state file stays whole, the daemon serves on
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("could not write the experiment state", experiment=exp.id, error=str(exc))
    _written(exp, time.monotonic() - started)


async def _write_in_steps(daemon: Daemon, exp: Experiment) -> None:
    """A large experiment's periodic state write, a piece per turn of the loop.

    Trials change between pieces; each is written as it is when its turn
    comes, and the file holds the trials there were when the write began. A
    forced write meanwhile makes this one give up (``state_generation``).
    """
    generation = exp.state_generation
    path = exp.path / p.EXPERIMENT_STATE_FILE
    tmp = path.with_name(f".{path.name}.steps.tmp")
    busy = 0.0
    chunks = state_chunks(daemon, exp)
    try:
        with open(tmp, "wb") as f:
            while generation == exp.state_generation:
                started = time.monotonic()
                chunk = next(chunks, None)
                if chunk is not None:
                    f.write(chunk)
                busy += time.monotonic() - started
                if chunk is None:
                    break
                await anyio.sleep(0)  # the loop serves everyone else between pieces
        if generation == exp.state_generation:
            os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write the experiment state", experiment=exp.id, error=str(exc))
    finally:
        chunks.close()
        with contextlib.suppress(OSError):
            tmp.unlink()  # gone already once it has replaced the state file
        exp.state_writing = False
        _written(exp, busy)


def _written(exp: Experiment, busy: float) -> None:
    exp.state_written = time.monotonic()
    exp.state_every = STATE_WRITE_COST_RATIO * busy
