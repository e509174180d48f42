"""Start-up after a crash: replay the journal into the state, then pick up where it stopped.

The journal holds every accepted experiment, every control request and every
event, in order; replaying them through ``core.reducer`` (the code the live
daemon applies them with) gives each trial its last known state. Finished
trials go to their archive as the replay meets their end, so memory holds only
unfinished ones. Trials that were RUNNING when the daemon died are not
failures: whatever is left of their processes is killed, and they go back to
the front of their queue to resume from their latest checkpoint (a PBT exploit
journalled before the crash is applied then). The event sequence and the recent
history continue, so a client that resubscribes from the last event it saw
misses nothing.
"""

from __future__ import annotations

import structlog
from tuned_client import protocol as p

from ..core import reducer
from ..core.ledger import ImpossibleRequest, ResourceError
from ..core.model import Experiment, Trial
from ..core.records import Control, Submitted
from ..run.leftovers import Target, kill_leftovers
from ..store.journal import Journal
from ..store.private import write_private
from . import Daemon

log = structlog.get_logger("tuned.recovery")


def recover(daemon: Daemon) -> None:
    """Replay the journal into ``daemon``, clean up after the dead one, open the journal."""
    daemon.archive.reset()  # rebuilt below from the journal, the truth
    started: dict[str, p.TrialStarted] = {}
    trainables: dict[str, bytes] = {}
    last_seq = count = 0
    for record in Journal.replay(daemon.journal.path):
        count += 1
        if isinstance(record, Submitted):
            if record.spec.trainable:
                trainables[record.experiment_id] = record.spec.trainable
        elif not isinstance(record, Control):
            last_seq = max(last_seq, record.seq)
            daemon.bus.publish(record)  # the history a resubscribing client catches up from
            if isinstance(record, p.TrialStarted):
                started[record.trial_id] = record
        applied = reducer.apply(daemon.state, record, daemon.archive.revive)
        if isinstance(record, p.TrialFinished) and applied.trial is not None:
            daemon.archive.evict(applied.trial)
    daemon.bus.seq = max(daemon.bus.seq, last_seq)
    daemon.journal.open()
    if count:
        log.info("journal replayed", records=count, last_seq=last_seq)
    _restore_trainables(daemon, trainables)
    _resume_unfinished(daemon, started)
    for exp in daemon.experiments.values():
        daemon.archive.evict_finished(exp)


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


def _resume_unfinished(daemon: Daemon, started: dict[str, p.TrialStarted]) -> None:
    """Kill what the dead daemon left running; queue unfinished trials; finish the rest."""
    unfinished = [e for e in daemon.experiments.values() if not e.done]
    kill_leftovers(
        [
            Target(t.id, started[t.id].pid, started[t.id].ts)
            for exp in unfinished
            for t in exp.live()
            if t.status == "RUNNING" and t.id in started
        ]
    )
    for exp in unfinished:
        running = [t for t in exp.live() if t.status == "RUNNING"]
        for trial in reversed(running):  # back in front of the queue, in their order
            _resume_running(daemon, exp, trial)
        for trial in list(exp.queue):
            status = _ending(daemon, exp, trial)
            if status is not None:
                daemon.finish(trial, status)
        if not exp.done:
            daemon.scheduler.add(exp)
            log.info("experiment resumed", experiment=exp.id, queued=len(exp.queue))
        daemon.maybe_finish(exp)
    daemon.wake()


def _resume_running(daemon: Daemon, exp: Experiment, trial: Trial) -> None:
    """A trial the crash stopped: exploited, ended as it was asked to, or queued again."""
    if trial.id in daemon.state.exploits:
        daemon.exploit_now(trial)  # exploited while it ran: the crash ended the attempt
        return
    if exp.cancelled or trial.error == "cancelled":
        trial.error = "cancelled"
        daemon.finish(trial, "ERROR")
    elif exp.interrupted:  # its script had gone: it was stopping, unfinished
        trial.error = p.INTERRUPTED
        daemon.finish(trial, "ERROR")
    elif trial.stop_requested:
        daemon.finish(trial, "TERMINATED")
    else:
        daemon.emit_queued(trial, front=True)


def _ending(daemon: Daemon, exp: Experiment, trial: Trial) -> p.TrialStatus | None:
    """How a queued trial ends now (cancelled, stopped, no longer fits here), if it does."""
    if exp.cancelled or trial.error == "cancelled":
        trial.error = "cancelled"
        return "ERROR"
    if trial.stop_requested:
        return "TERMINATED"
    try:
        daemon.ledger.check(trial.request)
    except (ImpossibleRequest, ResourceError) as exc:  # the daemon restarted smaller
        trial.error = f"cannot run on this daemon any more: {exc}"
        return "ERROR"
    return None
