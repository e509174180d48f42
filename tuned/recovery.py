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
import time
from collections.abc import Generator
from pathlib import Path

import anyio
import msgspec
import structlog
from tuned_client import protocol as p

from . import archive
from .daemon import Daemon
from .errors import Refused
from .exploit import apply_exploit
from .journal import Control, Journal, Submitted
from .ledger import ImpossibleRequest, ResourceError, parse_request
from .leftovers import Target, kill_leftovers
from .private import write_private
from .results import select_kept
from .trials import FINAL, Experiment, Trial, move_experiment, share_spec

log = structlog.get_logger("tuned.recovery")

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
    trainables: dict[str, bytes] = {}
    for record in Journal.replay(daemon.journal.path):
        count += 1
        if isinstance(record, Submitted):
            _submitted(daemon, record, trainables)
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
    _restore_trainables(daemon, trainables)
    _resume_unfinished(daemon, started)
    for exp in daemon.experiments.values():
        archive.evict_finished(daemon, exp)


def _submitted(daemon: Daemon, rec: Submitted, trainables: dict[str, bytes]) -> None:
    spec = rec.spec
    trial_specs, spec.trials = spec.trials, []
    if spec.trainable:
        trainables[rec.experiment_id] = spec.trainable
    spec.trainable = b""  # its trainable file holds it since submit; trials load it from there
    share_spec(spec)
    daemon._exp_seq += 1
    exp = Experiment(rec.experiment_id, spec, Path(rec.path), daemon._exp_seq)
    exp.closed = not spec.open_ended
    daemon.experiments[exp.id] = exp
    for trial_id, ts in zip(rec.trial_ids, trial_specs, strict=True):
        _new_trial(daemon, exp, trial_id, ts.tag, ts.config, ts.resources)


def _restore_trainables(daemon: Daemon, trainables: dict[str, bytes]) -> None:
    """Put back the trainable file of each unfinished experiment as the journal has it.

    The journal is the daemon's own copy; the file in the results folder is what
    trials load, and is written again if it is missing or not what was submitted.
    """
    for exp_id, data in trainables.items():
        exp = daemon.experiments.get(exp_id)
        if exp is None or exp.done:
            continue
        path = exp.trainable_path
        try:
            if not path.exists() or path.read_bytes() != data:
                write_private(path, data)
                log.info("trainable file written again", experiment=exp_id, path=str(path))
        except OSError as exc:
            log.warning("cannot write the trainable file", experiment=exp_id, error=str(exc))


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
    elif rec.action == "exploit" and trial is not None and rec.config:
        staged = Path(rec.checkpoint) if rec.checkpoint else None
        config = msgspec.Raw(rec.config)
        daemon.restarts[trial.id] = (config, staged, rec.iteration, rec.time_total_s)
        if rec.resources:  # ResourceChangingScheduler's; no longer fits here: keep the old
            with contextlib.suppress(Refused):
                trial.request = daemon._request_for(rec.resources, f"trial {trial.tag}")
                trial.resources = rec.resources
        trial.stop_requested = True  # as live: the attempt ends, then the exploit applies
    elif rec.action == "resume" and exp is not None:
        exp.cancelled = exp.done = False
        exp.closed = exp.closed and not rec.reopen
        if rec.path:
            move_experiment(exp, Path(rec.path))
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
        daemon.restarts.pop(trial.id, None)  # a journalled exploit was applied: it is done
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
        if ev.counted:
            trial.failures += 1
            trial.losses = 0
        else:
            trial.losses += 1
        trial.pid = 0
    elif isinstance(ev, p.TrialFinished):
        _set_status(trial, ev.status)
        trial.error, trial.traceback, trial.timed_out = ev.error, ev.traceback, ev.timed_out
        trial.pid = 0


def _resume_unfinished(daemon: Daemon, started: dict[str, p.TrialStarted]) -> None:
    """Kill what the dead daemon left running; queue unfinished trials; finish the rest."""
    kill_leftovers(
        [
            Target(t.id, started[t.id].pid, started[t.id].ts)
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
            if trial.id in daemon.restarts:  # exploited while it ran: the crash ended the attempt
                apply_exploit(daemon, trial)
            if trial.attempt:
                daemon.emit_queued(trial)
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
        # No environment: it holds the user's secrets, and this file is in the results
        # folder. Tuner.restore runs with the environment of the script that restores.
        ("spec", msgspec.structs.replace(exp.spec, trials=[], trainable=b"", env={})),
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
