"""How trials end: done, failed, retried, cancelled, stopped, out of time, or exploited.

Each is a record (``TrialFinished``, ``TrialRetrying``, a ``Control``) that the
reducer applies; what is not state (signals to processes, archiving a finished
trial, files of an exploit) is done here around it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import msgspec
import structlog
from tuned_client import protocol as p

from ..core.model import FINAL, Experiment, Trial
from ..core.outcome import Outcome
from ..errors import Refused
from ..run import exploit
from ..store.results import write_error, write_params
from .base import DaemonBase
from .intake import request_for

log = structlog.get_logger("tuned.daemon")


class Outcomes(DaemonBase):
    def settle(self, trial: Trial, outcome: Outcome) -> None:
        """Carry out what ``core.outcome.decide`` made of an attempt that ended."""
        trial.error, trial.traceback = outcome.error, outcome.traceback
        if outcome.kind == "retry":
            if outcome.counted:
                log.info("retrying trial", trial=trial.id, error=trial.error, attempt=trial.attempt)
            else:
                log.warning(
                    "trial lost through no fault of its own; running it again from its checkpoint",
                    trial=trial.id,
                    reason=outcome.error,
                    checkpoint=trial.checkpoint or "none (from the start)",
                )
            self.requeue(trial, outcome.error, counted=outcome.counted)
        else:
            if outcome.status == "ERROR" and trial.dir is not None:
                write_error(trial.dir, trial.error, trial.traceback)
            self.finish(trial, outcome.status)
            if outcome.fail_fast:
                self.cancel(trial.experiment.id)
        self.wake()

    def requeue(self, trial: Trial, error: str, *, counted: bool = True) -> None:
        """A failed attempt with retries left, or a lost one, goes to the front of its queue."""
        self.emit(
            p.TrialRetrying,
            experiment_id=trial.experiment.id,
            trial_id=trial.id,
            attempt=trial.attempt,
            error=error,
            counted=counted,
        )

    def finish(self, trial: Trial, status: p.TrialStatus) -> None:
        if status == "TERMINATED" and trial.id in self.state.exploits:
            self.exploit_now(trial)  # PBT stopped it to run it again, with a new config
            return
        self.emit(
            p.TrialFinished,
            experiment_id=trial.experiment.id,
            trial_id=trial.id,
            status=status,
            error=trial.error,
            traceback=trial.traceback,
            timed_out=trial.timed_out,
        )
        exp = trial.experiment
        self.maybe_finish(exp)
        self.save_state(exp)
        self.archive.evict(trial)  # a finished trial leaves memory for its archive file

    # ------------------------------------------------------------ cancel, stop, time budget

    def cancel(self, target: str) -> None:
        exp = self.experiments.get(target)
        if exp is not None:
            self.control("cancel", target)
            for trial in list(exp.live()):
                self._end_early(trial)
            self.maybe_finish(exp)
            return
        if self.state.is_archived(target):
            return  # it has ended: nothing to cancel
        found = self.trial(target)
        if found is None:
            raise Refused("not_found", f"no experiment or trial {target!r} (see `tuned ls`)")
        if found.status not in FINAL:
            self.control("cancel", target)
            self._end_early(found)

    def _end_early(self, trial: Trial) -> None:
        """A waiting trial ends now as its error says; a running one is told to stop."""
        if trial.status == "PENDING":
            self.finish(trial, "ERROR" if trial.error else "TERMINATED")
        elif trial.status == "RUNNING":
            self.signal_trial(trial, signal.SIGTERM)

    def stop_trial(self, trial_id: str) -> None:
        """End a trial as TERMINATED: at its next report if it runs, now if it waits."""
        trial = self.trial(trial_id)
        if trial is None and self.state.is_archived(trial_id):
            return  # it has ended
        if trial is None:
            raise Refused("not_found", f"no trial {trial_id!r} (see `tuned status`)")
        if trial.status in FINAL:
            return
        self.control("stop", trial_id)
        if trial.status == "PENDING":
            self.finish(trial, "TERMINATED")

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
        self.control("close", exp.id)
        budget = exp.spec.time_budget_s
        for trial in list(exp.queue):
            trial.error = f"not started: the experiment's {budget:g} s time budget ran out"
            self.finish(trial, "ERROR")
        for trial in list(exp.live()):
            if trial.status == "RUNNING":
                self.control("stop", trial.id)
                self.signal_trial(trial, signal.SIGTERM)
        self.maybe_finish(exp)

    # ------------------------------------------------------------ PBT's exploit

    def restart_trial(
        self,
        trial_id: str,
        config: msgspec.Raw,
        checkpoint: str,
        resources: list[dict[str, float]] | None = None,
    ) -> None:
        """PBT's exploit: stop the attempt, then queue the trial with ``config`` from a copy.

        The donor's checkpoint is copied now (``run.exploit.stage``): the donor may
        replace it later. The request is journalled before it is acknowledged.
        """
        trial = self.trial(trial_id)
        if trial is None:
            raise Refused("not_found", f"no trial {trial_id!r} (see `tuned status`)")
        if trial.status in FINAL:
            raise Refused("bad_request", f"trial {trial_id} has ended: it cannot be restarted")
        if not isinstance(p.unpack_opaque(config), dict):
            raise Refused("bad_request", "a restarted trial's config must be a dict")
        if resources:  # ResourceChangingScheduler's: checked now, like a submit's
            request_for(self.ledger, self.launcher, resources, f"trial {trial.tag}")
        staged, iteration, time_total = "", 0, 0.0
        if checkpoint:
            src = Path(checkpoint).resolve()
            exp_dir = trial.experiment.path.resolve()
            if not src.is_dir() or exp_dir not in src.parents:
                raise Refused(
                    "bad_request",
                    f"checkpoint {checkpoint!r} is not in experiment {trial.experiment.id}",
                )
            if trial.dir is None:
                raise Refused("bad_request", f"trial {trial_id} has no folder yet")
            iteration, time_total = exploit.checkpoint_position(trial.experiment.live(), src)
            try:
                staged = str(exploit.stage(trial.dir, src, trial.attempt))
            except OSError as exc:
                raise Refused("refused", f"cannot copy checkpoint {checkpoint!r}: {exc}") from exc
        self.control(
            "exploit",
            trial_id,
            config=bytes(config),
            checkpoint=staged,
            iteration=iteration,
            time_total_s=time_total,
            resources=[dict(b) for b in resources or []],
        )
        if trial.status == "PENDING":  # not running: it starts again with the new config
            self.exploit_now(trial)

    def exploit_now(self, trial: Trial) -> None:
        """The attempt has ended (or never started): the trial runs again, exploit applied.

        Also how recovery finishes an exploit journalled before a crash, for a
        trial whose attempt the crash ended.
        """
        pending = self.state.exploits[trial.id]
        if trial.dir is not None:
            write_params(trial.dir, p.unpack_opaque(pending.config))
            installed = exploit.install(trial.dir, Path(pending.staged)) if pending.staged else None
            if installed is not None:
                dest, result_bytes, progress_bytes = installed
                self.emit(
                    p.TrialCheckpoint,
                    experiment_id=trial.experiment.id,
                    trial_id=trial.id,
                    path=str(dest),
                    iteration=pending.iteration,
                    time_total_s=pending.time_total_s,
                    result_bytes=result_bytes,
                    progress_bytes=progress_bytes,
                )
        self.emit_queued(trial, front=True, config=pending.config)
        self.save_state(trial.experiment)
        self.wake()
