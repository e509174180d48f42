"""The daemon's state and the operations on it: submit, admit, report, finish, cancel.

Everything here runs on the one event loop and is synchronous except where it
waits for processes (``supervisor``). Each change of a trial goes through
``trials.transition`` and becomes one event via ``emit``: appended to the
journal, then published to subscribers.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup
from tuned_client import protocol as p

from . import archive
from .config import Settings
from .decisions import Decisions
from .errors import Refused
from .events import EventBus
from .exploit import restart_now
from .inventory import GpuProbe, build_capacity
from .journal import Control, Journal, Submitted, encode_record
from .launcher import ClusterLauncher, Launcher
from .ledger import (
    SCALE,
    Capacity,
    ImpossibleRequest,
    Ledger,
    Request,
    ResourceError,
    parse_request,
)
from .monitor import Sampler
from .private import write_private
from .results import TrialFiles, experiment_dir, safe_component
from .scheduler import Scheduler
from .trials import (
    FINAL,
    Experiment,
    Trial,
    move_experiment,
    share_spec,
    trainable_file,
    transition,
)
from .trials import trial_id as make_trial_id

log = structlog.get_logger("tuned.daemon")

RESULT_FLUSH_S = 0.05  # how long a reported row may wait in memory before it is written


def checkpoint_score(spec: p.ExperimentSpec, row: dict[str, Any]) -> float | None:
    value = row.get(spec.checkpoint_score_attribute) if spec.checkpoint_score_attribute else None
    return float(value) if isinstance(value, int | float) else None


class Daemon:
    def __init__(self, settings: Settings, probe: GpuProbe, launcher: Launcher) -> None:
        self.settings = settings
        self.probe = probe
        self.launcher = launcher
        if isinstance(launcher, ClusterLauncher):
            self.capacity = launcher.capacity()
        else:
            self.capacity = build_capacity(settings, probe)
        self.ledger = Ledger(self.capacity)
        self.scheduler = Scheduler(self.ledger)
        self.bus = EventBus(settings.event_history, settings.subscriber_buffer)
        self.journal = Journal(settings.journal_path)
        self.experiments: dict[str, Experiment] = {}
        self.trials: dict[str, Trial] = {}
        # Trials admitted and not yet cleaned up by their supervisor: the sampler and
        # status walk these, never every trial of every experiment.
        self.running: dict[str, Trial] = {}
        self.started_at = time.time()
        self.connections = 0
        self._wakeup = anyio.Event()
        self.activity = anyio.Event()
        self.trial_started = anyio.Event()
        self.sampler = Sampler(self)
        self._exp_seq = 0
        # PBT exploits waiting for the trial's current attempt to end (restart_trial).
        self.restarts: dict[str, tuple[msgspec.Raw, Path | None, int, float]] = {}
        self.decisions = Decisions()  # trials waiting on their client's decision
        self._unflushed: set[TrialFiles] = set()
        self._flush_wakeup = anyio.Event()
        self.tg: TaskGroup | None = None
        self.shutdown_scope: anyio.CancelScope | None = None
        self.stopping = False

    def request_shutdown(self) -> None:
        """Graceful stop: cancels the root task group; trials are cleaned up shielded."""
        self.stopping = True
        if self.shutdown_scope is not None:
            self.shutdown_scope.cancel()

    # ------------------------------------------------------------ events

    def emit(self, cls: type[Any], **fields: Any) -> Any:
        """Journal the event, then publish it; encoded once for both.

        A ``TrialResult`` is held to the end of the loop's turn, so that the
        results read together are journalled in one write. A daemon killed before
        that write loses them, and recovery does not need them: the trial was
        RUNNING, so it is queued again from its last checkpoint (its
        ``TrialCheckpoint`` is never held, and a checkpoint's report is synced
        before its ack) and its result files are cut back to that checkpoint's
        offsets, so the lost results are reported again by the retry. No client
        saw them either, so none knows a seq that the recovered daemon gives out
        again: events go to subscribers only after the write (``_send_batch``
        flushes first), and a reply taken in this turn (an ``ExperimentReply``'s
        seq) is written in a later one, anyio's send yielding to the loop first.
        """
        event = cls(seq=self.bus.next_seq(), ts=time.time(), **fields)
        body = encode_record(event)
        if cls is not p.ResourceSnapshot:  # usage samples are news, not state
            self.journal.append_encoded(body, hold=cls is p.TrialResult)
        self.bus.publish_encoded(event, body)
        return event

    def emit_queued(self, trial: Trial) -> None:
        """A trial entered its queue: first submitted, added, restarted or resumed."""
        self.emit(
            p.TrialQueued,
            experiment_id=trial.experiment.id,
            trial_id=trial.id,
            name=trial.name,
            config=trial.config,
            attempt=trial.attempt,
            tag=trial.tag,
            resources=trial.resources,
        )

    def results_pending(self, files: TrialFiles) -> None:
        """A trial's result rows wait in memory: write them within ``RESULT_FLUSH_S``."""
        self._unflushed.add(files)
        self._flush_wakeup.set()

    async def flush_results_forever(self) -> None:
        """Write result rows behind, in batches: a few writes per trial per interval."""
        while True:
            await self._flush_wakeup.wait()
            await anyio.sleep(RESULT_FLUSH_S)  # the batching window
            self._flush_wakeup = anyio.Event()
            batch, self._unflushed = self._unflushed, set()
            for files in batch:
                try:
                    files.flush()
                except OSError as exc:  # the trial learns it at its next report or its end
                    log.warning("cannot write results", dir=str(files.dir), error=str(exc))

    def wake(self) -> None:
        """Something freed or queued: let admission run."""
        self._wakeup.set()

    def touch(self) -> None:
        self.activity.set()
        self.activity = anyio.Event()

    def trials_running(self) -> Iterator[Trial]:
        """Running trials in admission order: O(running), not O(all trials)."""
        return (t for t in list(self.running.values()) if t.status == "RUNNING")

    @property
    def busy(self) -> bool:
        return self.connections > 0 or any(not e.done for e in self.experiments.values())

    # ------------------------------------------------------------ submission

    def _request_for(self, bundles: list[dict[str, float]], what: str) -> Request:
        try:
            request = parse_request(bundles)
            self.ledger.check(request)
            if isinstance(self.launcher, ClusterLauncher):
                self.launcher.check(request)
        except ImpossibleRequest as exc:
            raise Refused("impossible_resources", f"{what}: {exc}") from exc
        except ResourceError as exc:
            raise Refused("bad_request", f"{what}: {exc}") from exc
        return request

    def _new_experiment_id(self, path: Path) -> str:
        """An id no experiment of this daemon has, nor any trainable file in ``path``."""
        while True:
            candidate = secrets.token_hex(3)[:5]
            if candidate not in self.experiments and not trainable_file(path, candidate).exists():
                return candidate

    def _experiment_dir(self, spec: p.ExperimentSpec) -> Path:
        if not spec.name or safe_component(spec.name) != spec.name or spec.name in (".", ".."):
            raise Refused(
                "bad_request",
                f"experiment name {spec.name!r} must be one folder name "
                "(letters, digits, '_', '-', '.', '=', ','; no '/' or '..')",
            )
        root = Path(spec.storage_path).expanduser()
        live = {e.path: e for e in self.experiments.values() if not e.done}
        name = spec.name
        for n in range(2, 100):
            if root / name not in live or not spec.name_generated:
                break
            name = f"{spec.name}_{n}"  # two scripts started in the same second
        if root / name in live:
            # Two live experiments in one folder would share its state file; refuse the second.
            first = live[root / name]
            raise Refused(
                "refused",
                f"experiment {first.id} ({spec.name!r}) is still running in {root / name}: give "
                "this one another name (RunConfig(name=...)), or wait for it to end "
                f"(`tuned cancel {first.id}` ends it now)",
            )
        try:
            path = experiment_dir(root, name)
        except OSError as exc:
            raise Refused(
                "bad_request", f"storage_path {str(root)!r} is not writable: {exc.strerror}"
            ) from exc
        spec.name = name
        return path

    def submit(self, spec: p.ExperimentSpec) -> p.Accepted:
        if self.stopping:
            raise Refused("refused", "the daemon is shutting down")
        if self.journal.failed is not None:
            raise self._journal_refusal()
        default = self._request_for(spec.resources, "experiment resources")
        requests = [
            self._request_for(t.resources, f"trial {t.tag}") if t.resources else default
            for t in spec.trials
        ]
        path = self._experiment_dir(spec)
        exp_id = self._new_experiment_id(path)
        if spec.trainable:
            try:
                write_private(trainable_file(path, exp_id), spec.trainable)
            except OSError as exc:
                raise Refused(
                    "refused", f"cannot write the trainable to {path}: {exc.strerror or exc}"
                ) from exc
        self._exp_seq += 1
        exp = Experiment(exp_id, spec, path, self._exp_seq, closed=not spec.open_ended)
        exp.started_at = time.time()
        self.experiments[exp_id] = exp
        ids = self._add_trials(exp, spec.trials, requests)
        self.journal.append(Submitted(exp_id, str(path), ids, spec))
        if self.journal.failed is not None:  # the disk filled up just now: take none of it
            del self.experiments[exp_id]
            for trial_id in ids:
                del self.trials[trial_id]
            raise self._journal_refusal()
        spec.trials = []  # held by the trials now; the journal has them
        self.emit(
            p.ExperimentAccepted,
            experiment_id=exp_id,
            name=spec.name,
            path=str(path),
            num_trials=len(ids),
            metric=spec.metric,
            mode=spec.mode,
        )
        for trial in exp.live():
            self.emit_queued(trial)
        self.scheduler.add(exp)
        self.wake()
        self.after_submit(exp)
        log.info("experiment accepted", experiment=exp_id, name=spec.name, trials=len(ids))
        return p.Accepted(
            experiment_id=exp_id, path=str(path), trial_ids=ids, capacity=self.capacity_totals()
        )

    def _journal_refusal(self) -> Refused:
        failed = self.journal.failed
        return Refused(
            "refused",
            f"the daemon cannot write its journal in {self.settings.state_dir} "
            f"({failed.strerror or failed if failed else 'unknown error'}); it finishes what "
            "it has but takes no new work until there is room and it is restarted",
        )

    def capacity_totals(self) -> dict[str, float]:
        cap = self.capacity
        totals = {"cpu": cap.cpu / SCALE, "gpu": float(len(cap.gpu_ids)), "memory": cap.memory}
        totals.update({k: v / SCALE for k, v in cap.custom.items()})
        return totals

    def _add_trials(
        self, exp: Experiment, specs: list[p.TrialSpec], requests: list[Request]
    ) -> list[str]:
        ids = []
        for spec, request in zip(specs, requests, strict=True):
            index = len(exp.trials)
            trial = Trial(
                id=make_trial_id(exp.id, index),
                index=index,
                tag=spec.tag,
                experiment=exp,
                config=spec.config,
                request=request,
                resources=spec.resources or exp.spec.resources,
            )
            exp.trials.append(trial)
            exp.queue.append(trial)
            self.trials[trial.id] = trial
            ids.append(trial.id)
        return ids

    def add_trials(self, exp_id: str, specs: list[p.TrialSpec]) -> p.TrialsAdded:
        exp = self.experiment(exp_id)
        if exp.closed:
            raise Refused("bad_request", f"experiment {exp_id} takes no more trials")
        default = parse_request(exp.spec.resources)
        requests = [
            self._request_for(t.resources, f"trial {t.tag}") if t.resources else default
            for t in specs
        ]
        ids = self._add_trials(exp, specs, requests)
        for new_id in ids:
            self.emit_queued(self.trials[new_id])
        self.wake()
        return p.TrialsAdded(experiment_id=exp_id, trial_ids=ids)

    def close_experiment(self, exp_id: str) -> None:
        exp = self.experiment(exp_id)
        exp.closed = True
        self.journal.append(Control("close", exp_id))
        self.maybe_finish(exp)

    def experiment(self, exp_id: str) -> Experiment:
        exp = self.experiments.get(exp_id)
        if exp is None:
            raise Refused("not_found", f"no experiment {exp_id!r} (see `tuned ls`)")
        return exp

    # ------------------------------------------------------------ admission

    async def admission_loop(self, tg: TaskGroup) -> None:
        from .supervisor import supervise

        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            if self.stopping:
                continue
            for trial, allocation in self.scheduler.admit():
                trial.allocation = allocation
                trial.token = secrets.token_hex(16)
                transition(trial, "RUNNING")
                self.running[trial.id] = trial  # supervise() takes it out
                tg.start_soon(supervise, self, trial, name=f"trial {trial.id}")
                self.trial_started.set()
                self.trial_started = anyio.Event()

    # ------------------------------------------------------------ trial outcomes

    def requeue(self, trial: Trial, error: str, *, counted: bool = True) -> None:
        """A failed attempt with retries left, or a lost one (``counted=False``), goes back
        to the front of its queue."""
        transition(trial, "PENDING")
        self.emit(
            p.TrialRetrying,
            experiment_id=trial.experiment.id,
            trial_id=trial.id,
            attempt=trial.attempt,
            error=error,
            counted=counted,
        )
        trial.experiment.queue.appendleft(trial)

    def finish(self, trial: Trial, status: p.TrialStatus) -> None:
        if status == "TERMINATED" and trial.id in self.restarts and trial.status == "RUNNING":
            restart_now(self, trial)
            return
        self.restarts.pop(trial.id, None)
        transition(trial, status)
        self.emit(
            p.TrialFinished,
            experiment_id=trial.experiment.id,
            trial_id=trial.id,
            status=status,
            error=trial.error,
            traceback=trial.traceback,
            timed_out=trial.timed_out,
        )
        self.maybe_finish(trial.experiment)
        self.save_state(trial.experiment)
        self.archive_finished(trial)

    def archive_finished(self, trial: Trial) -> None:
        """A finished trial leaves memory for its experiment's archive (tuned.archive)."""
        archive.evict(self, trial)
        exp = trial.experiment
        if exp.done and exp.archive is not None:
            exp.archive.close()

    def maybe_finish(self, exp: Experiment) -> None:
        if exp.done or not exp.complete:
            return
        exp.done = True
        self.scheduler.remove(exp)
        self.launcher.experiment_done(exp.id)  # its warm workers and spares go
        self.emit(
            p.ExperimentFinished,
            experiment_id=exp.id,
            counts=exp.counts(),
            cancelled=exp.cancelled,
        )
        log.info("experiment finished", experiment=exp.id, counts=exp.counts())
        self.save_state(exp, force=True)
        self.touch()

    def cancel(self, target: str) -> None:
        finished_on_disk = archive.is_archived(self, target)
        if target in self.experiments or target in self.trials or finished_on_disk:
            self.journal.append(Control("cancel", target))
        if target in self.experiments:
            exp = self.experiments[target]
            exp.cancelled = True
            exp.closed = True
            for trial in list(exp.live()):
                self._cancel_trial(trial)
            self.maybe_finish(exp)
            return
        found = self.trials.get(target)
        if finished_on_disk:
            return  # it has ended: nothing to cancel
        if found is None:
            raise Refused("not_found", f"no experiment or trial {target!r} (see `tuned ls`)")
        self._cancel_trial(found)

    def resize(self, capacity: Capacity) -> None:
        """The machines changed (a cluster node joined or left): mirror them."""
        if capacity == self.capacity:
            return
        log.info(
            "capacity changed",
            cpus=capacity.cpu / SCALE,
            gpus=len(capacity.gpu_ids),
            memory=capacity.memory,
            custom={k: v / SCALE for k, v in capacity.custom.items()},
        )
        self.capacity = capacity
        self.ledger.resize(capacity)
        self.wake()

    @staticmethod
    def signal_trial(trial: Trial, sig: signal.Signals) -> None:
        """Signal a running trial's whole tree, wherever it runs."""
        if trial.process is not None:
            trial.process.signal(sig)

    def _cancel_trial(self, trial: Trial) -> None:
        if trial.status in FINAL:
            return
        trial.error = trial.error or "cancelled"
        if trial.status == "PENDING":
            trial.experiment.queue.remove(trial)
            self.finish(trial, "ERROR")
        else:
            trial.stop_requested = True
            self.signal_trial(trial, signal.SIGTERM)

    # ------------------------------------------------------------ reports

    def on_report(self, trial: Trial, report: p.Report, decide: bool = False) -> p.TrialResult:
        from .supervisor import files_of

        row = p.unpack_opaque(report.metrics)
        if not isinstance(row, dict):
            raise Refused("bad_request", "a report's metrics must be a dict")
        trial.iteration = int(row.get("training_iteration", trial.iteration + 1))
        trial.time_total_s = float(row.get("time_total_s", trial.time_total_s))
        trial.last_result = msgspec.Raw(bytes(report.metrics))
        files = files_of(trial)
        try:
            files.append(row, flush=bool(report.checkpoint))
        except OSError as exc:  # disk full: the trial fails alone, the daemon serves on
            trial.error = trial.traceback = (
                f"OSError: cannot write the trial's results in {files.dir}: {exc.strerror or exc}"
            )
            raise Refused("refused", trial.error) from exc
        exp_id = trial.experiment.id
        if report.checkpoint:
            score = checkpoint_score(trial.experiment.spec, row)
            self._accept_checkpoint(trial, report.checkpoint)
            files.mark_checkpoint()
            trial.checkpoint_offsets = files.checkpoint_offsets
            self.emit(
                p.TrialCheckpoint,
                experiment_id=exp_id,
                trial_id=trial.id,
                path=trial.checkpoint,
                iteration=trial.iteration,
                time_total_s=trial.time_total_s,
                result_bytes=files.checkpoint_offsets[0],
                progress_bytes=files.checkpoint_offsets[1],
                score=score,
            )
            self._prune_checkpoints(trial, score)
        event: p.TrialResult = self.emit(
            p.TrialResult,
            experiment_id=exp_id,
            trial_id=trial.id,
            metrics=trial.last_result,
            decide=decide,
        )
        return event

    def _accept_checkpoint(self, trial: Trial, path: str) -> None:
        cp = Path(path).resolve()
        if trial.dir is None or cp.parent != trial.dir.resolve() or not cp.is_dir():
            raise Refused("bad_request", f"checkpoint {path!r} is not in the trial's folder")
        trial.checkpoint = str(cp)
        trial.checkpoint_iteration = trial.iteration
        trial.checkpoint_time = trial.time_total_s

    def _prune_checkpoints(self, trial: Trial, score: float | None) -> None:
        """CheckpointConfig(num_to_keep=...): delete the checkpoint folders not kept."""
        import shutil

        from .results import select_kept

        spec = trial.experiment.spec
        trial.kept_checkpoints.append((trial.checkpoint, score))
        trial.kept_checkpoints, dropped = select_kept(
            trial.kept_checkpoints,
            spec.num_to_keep,
            bool(spec.checkpoint_score_attribute),
            spec.checkpoint_score_order,
        )
        for path in dropped:
            shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------ recovery, restore, limits

    def save_state(self, exp: Experiment, *, force: bool = False) -> None:
        from .recovery import write_state

        write_state(self, exp, force=force)

    def after_submit(self, exp: Experiment) -> None:
        """What a new (or recovered) experiment needs: its state file and its time budget."""
        exp.spec.trainable = b""  # its trainable file holds it now; trials load it from there
        share_spec(exp.spec)
        self.save_state(exp, force=True)
        self.watch_budget(exp)

    def watch_budget(self, exp: Experiment) -> None:
        if exp.spec.time_budget_s > 0 and self.tg is not None and not exp.done:
            self.tg.start_soon(self._budget, exp, name=f"time budget {exp.id}")

    async def _budget(self, exp: Experiment) -> None:
        """TuneConfig(time_budget_s=): at expiry, stop what runs and start nothing more."""
        deadline = exp.started_at + exp.spec.time_budget_s
        await anyio.sleep(max(0.0, deadline - time.time()))
        if exp.done:
            return
        log.info("experiment time budget spent", experiment=exp.id)
        exp.closed = True
        self.journal.append(Control("close", exp.id))
        for trial in list(exp.queue):
            exp.queue.remove(trial)
            budget = exp.spec.time_budget_s
            trial.error = f"not started: the experiment's {budget:g} s time budget ran out"
            self.finish(trial, "ERROR")
        for trial in list(exp.live()):
            if trial.status == "RUNNING":
                trial.stop_requested = True
                self.journal.append(Control("stop", trial.id))
                self.signal_trial(trial, signal.SIGTERM)
        self.maybe_finish(exp)

    def stop_trial(self, trial_id: str) -> None:
        """End a trial as TERMINATED: at its next report if it runs, now if it waits."""
        trial = self.trials.get(trial_id)
        if trial is None and archive.is_archived(self, trial_id):
            return  # it has ended
        if trial is None:
            raise Refused("not_found", f"no trial {trial_id!r} (see `tuned status`)")
        if trial.status in FINAL:
            return
        self.journal.append(Control("stop", trial_id))
        trial.stop_requested = True
        if trial.status == "PENDING":
            trial.experiment.queue.remove(trial)
            self.finish(trial, "TERMINATED")

    def resume(self, req: p.ResumeExperiment) -> p.Accepted:
        """Tuner.restore: queue again the given trials of an experiment this daemon has.

        ``reopen``: a steered experiment takes more trials, until it is closed again.
        """
        exp_id, restart = req.experiment_id, req.restart
        exp = self.experiment(exp_id)
        wanted = [*req.resume, *restart]
        found = [archive.locate(self, tid) for tid in wanted]  # in memory or on disk
        bad = [tid for tid, at in zip(wanted, found, strict=True) if at is None]
        if bad or any(at is not None and at[0] is not exp for at in found):
            raise Refused("bad_request", f"trials {bad} are not in experiment {exp_id}")
        # Finished trials come back from the archive to run again.
        chosen = [archive.revive(self, exp, at[1]) for at in found if at is not None]
        reopen = req.reopen and exp.spec.open_ended
        moved = req.path if req.path and Path(req.path) != exp.path else ""
        if req.trainable:
            try:
                write_private(trainable_file(Path(moved or exp.path), exp.id), req.trainable)
            except OSError as exc:
                raise Refused("refused", f"cannot write the trainable: {exc}") from exc
        self.journal.append(
            Control("resume", exp_id, restart=list(restart), reopen=reopen, path=moved)
        )
        if moved:
            move_experiment(exp, Path(moved))
        exp.cancelled = exp.done = False
        exp.closed = exp.closed and not reopen
        for trial in chosen:
            if trial.status not in FINAL:
                continue
            if trial.id in restart:
                trial.checkpoint, trial.checkpoint_iteration = "", 0
                trial.checkpoint_time, trial.checkpoint_offsets = 0.0, (0, 0)
                trial.kept_checkpoints = []
            trial.error = trial.traceback = ""
            trial.stop_requested = trial.timed_out = False
            trial.failures = 0
            transition(trial, "PENDING")
            exp.queue.append(trial)
            self.emit_queued(trial)
        self.scheduler.remove(exp)
        self.scheduler.add(exp)
        exp.started_at = time.time()
        self.after_submit(exp)
        self.wake()
        self.maybe_finish(exp)
        return p.Accepted(
            experiment_id=exp.id,
            path=str(exp.path),
            trial_ids=[t.id if t else make_trial_id(exp.id, i) for i, t in enumerate(exp.trials)],
            capacity=self.capacity_totals(),
        )
