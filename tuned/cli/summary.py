"""What a watcher knows of experiments, folded from the event stream: one fold, three views.

``tuned tail``'s live view, ``tuned status`` and the ``tuned web`` page all show
the same things: each experiment's trials and their states, the last value of
every metric the user reports, the best trial so far (by the experiment's
``metric`` and ``mode``, Ray's rule: the trial's last result), and an ETA. They
fold events (or a ``GetExperiment`` reply) into these objects, and read them.
Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tuned_client import protocol as p

from .eventfmt import AUTO_KEYS

FINAL = ("TERMINATED", "ERROR")
ORDER = ("RUNNING", "PENDING", "TERMINATED", "ERROR")


def number(value: Any) -> float | None:
    """A metric as a finite float, or None (strings, NaN, objects don't rank or chart)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


@dataclass(slots=True)
class TrialSummary:
    trial_id: str
    name: str
    tag: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "PENDING"
    pid: int = 0
    path: str = ""
    started: float = 0.0  # first start
    ended: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)  # the last result, user values opaque
    error: str = ""
    traceback: str = ""
    resources: dict[str, float] = field(default_factory=dict)
    attempt: int = 0

    @property
    def iteration(self) -> int:
        it = self.last.get("training_iteration", 0)
        return it if isinstance(it, int) else 0


@dataclass(slots=True)
class ExperimentSummary:
    experiment_id: str
    name: str
    path: str = ""
    started_at: float = 0.0
    metric: str = ""
    mode: str = ""
    trials: dict[str, TrialSummary] = field(default_factory=dict)
    finished: bool = False
    cancelled: bool = False
    interrupted: bool = False  # its script went away (Tuner.restore resumes it)
    ended: float = 0.0
    to_make: int = 0  # trials its grid will still make: PENDING, not listed yet

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"PENDING": self.to_make} if self.to_make else {}
        for t in self.trials.values():
            out[t.status] = out.get(t.status, 0) + 1
        return out

    @property
    def total(self) -> int:
        return len(self.trials) + self.to_make

    def done(self) -> int:
        return sum(1 for t in self.trials.values() if t.status in FINAL)

    def state(self) -> str:
        if self.cancelled:
            return "cancelled"
        if self.interrupted:
            return "interrupted"
        if self.finished:
            return "finished"
        if any(t.status == "RUNNING" for t in self.trials.values()):
            return "running"
        return "queued"

    def best(self) -> TrialSummary | None:
        """The trial whose last result is best by ``metric``/``mode``; None without them."""
        if not self.metric or self.mode not in ("min", "max"):
            return None
        sign = 1.0 if self.mode == "min" else -1.0
        best: TrialSummary | None = None
        best_key = math.inf
        for t in self.trials.values():
            value = number(t.last.get(self.metric))
            if value is not None and sign * value < best_key:
                best, best_key = t, sign * value
        return best

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace trials have finished so far; None before the first ends.

        The pace (finished trials per second since the experiment was accepted)
        already counts how many run at once. Early-stopped trials make it a
        pessimistic guess while the scheduler prunes, as it should be.
        """
        if self.finished:
            return 0.0
        total, done = self.total, self.done()
        if not done or not self.started_at:
            return None
        elapsed = max(now - self.started_at, 0.0)
        return elapsed * (total - done) / done

    def metric_names(self) -> list[str]:
        """Every metric the user reported (not the ones the session adds), first seen first."""
        names: dict[str, None] = {}
        if self.metric:
            names[self.metric] = None
        for t in self.trials.values():
            for key in t.last:
                if key not in AUTO_KEYS:
                    names[key] = None
        return list(names)


class Fold:
    """Experiments built from events (and replies), as a watcher sees them."""

    def __init__(self) -> None:
        self.experiments: dict[str, ExperimentSummary] = {}

    def add_reply(self, reply: p.ExperimentReply) -> ExperimentSummary:
        """An experiment as ``GetExperiment`` gives it (one begun before our history)."""
        exp = ExperimentSummary(
            reply.experiment_id,
            reply.name,
            reply.path,
            reply.started_at,
            reply.metric,
            reply.mode,
            finished=reply.finished,
            cancelled=reply.cancelled,
            interrupted=reply.interrupted,
            to_make=reply.to_make,
        )
        for info in reply.trials:
            config = p.unpack_opaque(info.config)
            last = p.unpack_opaque(info.last_result) if bytes(info.last_result) else {}
            exp.trials[info.trial_id] = TrialSummary(
                info.trial_id,
                info.name,
                info.tag,
                config if isinstance(config, dict) else {},
                info.status,
                path=info.path,
                last=last if isinstance(last, dict) else {},
                error=info.error,
                traceback=info.traceback,
            )
        self.experiments[exp.experiment_id] = exp
        return exp

    def on_event(self, ev: Any) -> TrialSummary | ExperimentSummary | None:
        """Fold one event; what it changed (None: nothing we follow)."""
        if isinstance(ev, p.ExperimentAccepted):
            exp = ExperimentSummary(ev.experiment_id, ev.name, ev.path, ev.ts, ev.metric, ev.mode)
            exp.to_make = ev.num_trials  # each TrialQueued of a new trial takes one
            self.experiments[ev.experiment_id] = exp
            return exp
        exp_or_none = self.experiments.get(ev.experiment_id)
        if exp_or_none is None:
            return None  # began before the history we were given
        exp = exp_or_none
        if isinstance(ev, p.ExperimentFinished):
            exp.finished, exp.cancelled, exp.ended = True, ev.cancelled, ev.ts
            exp.interrupted, exp.to_make = ev.interrupted, 0
            return exp
        if isinstance(ev, p.TrialQueued):
            if exp.finished:  # Tuner.restore queued its trials again: it runs once more
                exp.finished = exp.cancelled = False
            config = p.unpack_opaque(ev.config)
            old = exp.trials.get(ev.trial_id)
            if old is None:
                exp.to_make = max(0, exp.to_make - 1)
            trial = old or TrialSummary(ev.trial_id, ev.name, ev.tag)
            trial.config = config if isinstance(config, dict) else {}
            trial.status, trial.pid = "PENDING", 0
            exp.trials[ev.trial_id] = trial
            return trial
        found = exp.trials.get(getattr(ev, "trial_id", ""))
        if found is None:
            return None
        trial = found
        if isinstance(ev, p.TrialStarted):
            trial.status, trial.pid, trial.attempt = "RUNNING", ev.pid, ev.attempt
            trial.resources = dict(ev.resources)
            trial.path = ev.trial_dir or trial.path
            trial.started = trial.started or ev.ts
        elif isinstance(ev, p.TrialResult):
            row = p.unpack_opaque(ev.metrics)
            if isinstance(row, dict):
                trial.last = row
        elif isinstance(ev, p.TrialRetrying):
            trial.status, trial.pid, trial.error = "PENDING", 0, ev.error
        elif isinstance(ev, p.TrialFinished):
            trial.status, trial.pid, trial.ended = ev.status, 0, ev.ts
            trial.error, trial.traceback = ev.error, ev.traceback
        else:
            return None
        return trial


def duration(seconds: float | None) -> str:
    """``1:02:03``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def short(value: Any, width: int = 10) -> str:
    """A value in a table cell: floats to 4 significant digits, long text cut with ``~``."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, p.PickledValue):
        text = value.text
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "~"


def best_line(exp: ExperimentSummary, width: int = 80) -> str:
    """``best 7373c_00002  loss=0.1234 (min)  lr=0.05 bs=32``, cut to ``width``."""
    best = exp.best()
    if best is None:
        return ""
    value = short(best.last.get(exp.metric), 12)
    config = " ".join(f"{k}={short(v, 12)}" for k, v in best.config.items())
    line = f"best {best.trial_id}  {exp.metric}={value} ({exp.mode})  {config}".rstrip()
    return line if len(line) <= width else line[: width - 1] + "~"
