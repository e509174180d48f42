"""Start-up: the snapshot, then the journal after it, then pick up where the last daemon stopped.

The snapshot (``store.snapshot``) holds the state when the current journal
began; replaying the journals of its epoch and after through ``core.reducer``
(the code the live daemon applies records with) gives each trial its last
known state. Without a snapshot (a first start, or a journal of a daemon that
had none) the whole journal is replayed, and finished trials go to their
archive as the replay meets their end, so memory holds only unfinished ones.
The replay yields to the event loop every few thousand records: the socket
answers ``status`` meanwhile, and other requests wait until it is done.

Trials that were RUNNING when the daemon died are not failures: whatever is
left of their processes is killed, and they go back to the front of their
queue to resume from their latest checkpoint (a PBT exploit journalled before
the crash is applied then). The event sequence continues, so a client that
resubscribes from the last event it saw misses nothing the journal still has.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog
from tuned_client import protocol as p

from ..core import reducer
from ..core.ledger import ImpossibleRequest, ResourceError
from ..core.model import Experiment, Trial
from ..core.records import Control, Epoch, Submitted
from ..run.leftovers import Target, kill_leftovers
from ..store import snapshot
from ..store.journal import Journal
from ..store.private import write_private
from . import Daemon

log = structlog.get_logger("tuned.recovery")

YIELD_EVERY = 2000  # records replayed between two turns given to the event loop


async def recover(daemon: Daemon) -> int:
    """Rebuild the state, clean up after the dead daemon, open the journal.

    Returns how many journal records were replayed.
    """
    settings = daemon.settings
    saved = snapshot.load(settings.snapshot_path)
    if saved is None:
        daemon.archive.reset()  # rebuilt below from the journal, the truth
    else:
        snapshot.restore(saved, daemon.state, daemon.archive)
        daemon.bus.seq = saved.seq
    epoch = saved.epoch if saved is not None else 0
    count = 0
    paths = journals(settings.journal_path, epoch)
    if paths and (_epoch_of(paths[0]) or 0) > epoch:
        log.error(
            "the snapshot is missing: what came before its journal is lost",
            snapshot=str(settings.snapshot_path),
        )
    for path in paths:
        for record, body in Journal.replay_encoded(path):
            if isinstance(record, Epoch):
                daemon.epoch = record.number
                continue
            _replay(daemon, record, body)
            count += 1
            if count % YIELD_EVERY == 0:
                await anyio.sleep(0)  # status requests are served between the pieces
    daemon.journal.open()
    if count:
        log.info("journal replayed", records=count, last_seq=daemon.bus.seq, epoch=daemon.epoch)
    _restore_trainables(daemon)
    _lock_folders(daemon)
    _resume_unfinished(daemon)
    for exp in daemon.experiments.values():
        daemon.archive.evict_finished(exp)
    return count


def journals(path: Path, epoch: int) -> list[Path]:
    """The journals to replay over the snapshot of ``epoch``, oldest first.

    A compaction leaves the journal it ended as ``journal-<n>.bin`` until its
    snapshot is on disk; those older than the snapshot (and a current journal
    of an older epoch) are wholly inside it and are deleted.
    """
    retired = sorted(
        (int(f.stem.rpartition("-")[2]), f)
        for f in path.parent.glob(f"{path.stem}-*{path.suffix}")
        if f.stem.rpartition("-")[2].isdigit()
    )
    chosen = []
    for number, f in retired:
        if number >= epoch:
            chosen.append(f)
        else:
            f.unlink(missing_ok=True)
    current = _epoch_of(path)
    if current is not None and current < epoch:
        log.info("journal older than the snapshot: it is inside it", path=str(path))
        path.unlink()
    elif current is not None:
        chosen.append(path)
    return chosen


def _epoch_of(path: Path) -> int | None:
    """The epoch a journal file begins (0 for one from before compactions), None if none."""
    if not path.exists():
        return None
    first = next(iter(Journal.replay(path)), None)
    return first.number if isinstance(first, Epoch) else 0


def _replay(daemon: Daemon, record: Submitted | Control | p.Event, body: bytes) -> None:
    if not isinstance(record, Submitted | Control):
        daemon.bus.seq = max(daemon.bus.seq, record.seq)
        daemon.bus.publish_encoded(record, body)  # the history clients catch up from
    applied = reducer.apply(daemon.state, record, daemon.archive.revive)
    if isinstance(record, p.TrialFinished) and applied.trial is not None:
        daemon.archive.evict(applied.trial)


def _restore_trainables(daemon: Daemon) -> None:
    """Put back the trainable file of each unfinished experiment as it was submitted.

    The daemon's copy (journal, snapshot) is the truth; the file in the results
    folder is what trials load, written again if it is missing or was replaced.
    """
    for exp_id, data in daemon.state.trainables.items():
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


def _lock_folders(daemon: Daemon) -> None:
    """Each unfinished experiment holds its folder again (``store.folderlock``).

    One found held (another daemon started an experiment there meanwhile) runs
    all the same, with a warning: refusing now would lose the work it has done.
    """
    for exp in daemon.experiments.values():
        if exp.done:
            continue
        try:
            held = daemon.locks.hold(exp.id, exp.path)
        except OSError as exc:
            log.warning("cannot lock the experiment folder", experiment=exp.id, error=str(exc))
            continue
        if not held:
            log.warning(
                "another experiment runs in this experiment's folder",
                experiment=exp.id,
                path=str(exp.path),
            )


def _resume_unfinished(daemon: Daemon) -> None:
    """Kill what the dead daemon left running; queue unfinished trials; finish the rest."""
    unfinished = [e for e in daemon.experiments.values() if not e.done]
    kill_leftovers(
        [
            Target(t.id, t.pid, t.started_at)
            for exp in unfinished
            for t in exp.live()
            if t.status == "RUNNING" and t.pid
        ],
        marker=str(daemon.settings.state_dir),
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
    if exp.interrupted:  # its script had gone: it never starts now (Tuner.restore starts it)
        trial.error = p.INTERRUPTED
        return "ERROR"
    if trial.stop_requested:
        return "TERMINATED"
    try:
        daemon.ledger.check(trial.request)
    except (ImpossibleRequest, ResourceError) as exc:  # the daemon restarted smaller
        trial.error = f"cannot run on this daemon any more: {exc}"
        return "ERROR"
    return None
