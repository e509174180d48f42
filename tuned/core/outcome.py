"""How an attempt ended, decided from what the trial said and how its process exited.

Done (TERMINATED), failed for good (ERROR), retried (a failure with retries
left: ``FailureConfig(max_failures=...)``), or lost through no fault of its
own (the zygote that forked it died) and run again without counting. Pure:
the supervisor reads the exit, the daemon carries the decision out.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Literal

from tuned_client.protocol import CANCELLED, INTERRUPTED, TrialStatus

from .model import Trial

# A trial lost this many times in a row (its zygote dying under it) counts as failed:
# a trainable that kills the process that forked it must not loop for ever.
MAX_LOSSES = 3


@dataclass(frozen=True)
class Outcome:
    kind: Literal["finish", "retry"]
    status: TrialStatus = "TERMINATED"  # of a finish
    error: str = ""
    traceback: str = ""
    counted: bool = True  # a retry that uses up one of max_failures (not a loss)
    fail_fast: bool = False  # FailureConfig(fail_fast=True): the experiment ends too


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"the trial process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the trial process was killed by signal {-code}"
    return f"the trial process exited with code {code}"


def decide(trial: Trial, code: int | None, lost: str = "", stderr_tail: str = "") -> Outcome:
    """What comes of the attempt that just ended with ``code`` (None: never started).

    ``lost``: why the machinery took it down, if it did. ``stderr_tail``: the end
    of its stderr, told when the process died without saying why.
    """
    spec = trial.experiment.spec
    error, traceback = trial.error, trial.traceback
    if lost and trial.exit_reported:  # it had ended and said how; only its exit code was lost
        code = 0 if trial.exit_ok else 1
    elif lost and not trial.stop_requested and not trial.timed_out:
        if trial.losses < MAX_LOSSES:
            why = f"{lost}; running it again from its last checkpoint"
            return Outcome("retry", error=why, counted=False)
        error = traceback = f"{lost}, {trial.losses + 1} times in a row"
    ok = code == 0 and (trial.exit_ok or (bool(spec.command) and not trial.exit_reported))
    if trial.stop_requested and error in (CANCELLED, INTERRUPTED):
        return Outcome("finish", "ERROR", error, traceback)  # unfinished: Tuner.restore resumes it
    if trial.stop_requested or ok:  # StopTrial, the time budget, or done
        return Outcome("finish", "TERMINATED")
    if trial.timed_out:
        error = f"TimeoutError: the trial ran past its {spec.trial_timeout_s:g} s time limit"
        traceback = error
    elif not error:
        if code == 0:
            error = "the trial process exited without reporting how it ended"
        else:
            error = describe_exit(code if code is not None else -9)
            traceback = error + stderr_tail
    if trial.failures < spec.max_failures:
        if trial.experiment.interrupted:  # no new attempt now: Tuner.restore makes it
            return Outcome("finish", "ERROR", INTERRUPTED, traceback)
        return Outcome("retry", error=error, traceback=traceback)
    fail_fast = spec.fail_fast and not trial.experiment.cancelled
    return Outcome("finish", "ERROR", error, traceback, fail_fast=fail_fast)
