"""What the page shows, kept by the web process: the fold, curves, usage over time.

Learning curves are kept columnar per trial (the iterations, and one list of
numbers per metric), so a thousand trials of a hundred results are a few
megabytes. Pages get a snapshot of their view first, then deltas: each
trial's new points carry the index they start at, so a page that got a
snapshot between two pushes applies the next delta without double points,
and a retried trial whose iterations start again truncates its curve.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tuned_client import protocol as p

from ..cli.eventfmt import AUTO_KEYS
from ..cli.summary import ExperimentSummary, Fold, TrialSummary, number, short

USAGE_POINTS = 900  # 30 minutes of the daemon's 2 s samples, per trial and for the machine


@dataclass(slots=True)
class Series:
    """A trial's results as columns: ``it[i]`` is the iteration of ``values[m][i]``."""

    it: list[int] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    sent: int = 0  # points already pushed to pages
    usage: deque[tuple[float, float, int, int]] = field(
        default_factory=lambda: deque(maxlen=USAGE_POINTS)
    )  # (time, cpu %, rss, gpu memory)
    loaded: bool = False  # result.json was read (a trial that began before we did)

    def add(self, row: dict[str, Any]) -> None:
        it = row.get("training_iteration")
        if not isinstance(it, int):
            it = (self.it[-1] + 1) if self.it else 1
        if self.it and it <= self.it[-1]:
            self.cut(it)  # a retry reports these iterations again
        n = len(self.it)
        self.it.append(it)
        for key, value in row.items():
            if key in AUTO_KEYS:
                continue
            x = number(value)
            column = self.values.get(key)
            if column is None:
                if x is None:
                    continue
                column = self.values[key] = [None] * n
            column.append(x)
        for column in self.values.values():
            if len(column) == n:
                column.append(None)

    def cut(self, it: int) -> None:
        """Forget the points from iteration ``it`` on."""
        keep = 0
        while keep < len(self.it) and self.it[keep] < it:
            keep += 1
        del self.it[keep:]
        for column in self.values.values():
            del column[keep:]
        self.sent = min(self.sent, keep)

    def points(self, start: int = 0) -> dict[str, Any]:
        return {
            "from": start,
            "it": self.it[start:],
            "m": {k: v[start:] for k, v in self.values.items()},
        }


def best_of(series: Series | None, metric: str, mode: str) -> float | None:
    """The trial's best value of the metric over every result (the table's "best")."""
    if series is None or not metric or mode not in ("min", "max"):
        return None
    values = [v for v in series.values.get(metric, ()) if v is not None]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    return short(value, 60)


class WebModel:
    """The fold plus what only the page needs; marks what changed for the next push."""

    def __init__(self) -> None:
        self.fold = Fold()
        self.series: dict[str, Series] = {}
        self.machine: deque[dict[str, Any]] = deque(maxlen=USAGE_POINTS)
        self.dirty_experiments: set[str] = set()
        self.dirty_trials: dict[str, set[str]] = {}  # experiment -> trials
        self.new_machine: list[dict[str, Any]] = []
        self.trial_experiment: dict[str, str] = {}

    @property
    def experiments(self) -> dict[str, ExperimentSummary]:
        return self.fold.experiments

    def _touch(self, exp_id: str, trial_id: str = "") -> None:
        self.dirty_experiments.add(exp_id)
        if trial_id:
            self.dirty_trials.setdefault(exp_id, set()).add(trial_id)

    def add_reply(self, reply: p.ExperimentReply) -> None:
        exp = self.fold.add_reply(reply)
        for trial_id in exp.trials:
            self.trial_experiment[trial_id] = exp.experiment_id
        self._touch(exp.experiment_id)

    def on_event(self, ev: Any) -> None:
        if isinstance(ev, p.ResourceSnapshot):
            self._snapshot(ev)
            return
        changed = self.fold.on_event(ev)
        if changed is None:
            return
        trial_id = getattr(ev, "trial_id", "")
        if trial_id:
            self.trial_experiment[trial_id] = ev.experiment_id
        if isinstance(ev, p.TrialResult) and isinstance(changed, TrialSummary):
            self.series.setdefault(trial_id, Series()).add(changed.last)
        elif (
            isinstance(ev, p.TrialStarted)
            and isinstance(changed, TrialSummary)
            and trial_id not in self.series
            and changed.iteration == 0
        ):  # seen from its first start, no result yet: every point will come as an event
            self.series[trial_id] = Series(loaded=True)
        self._touch(ev.experiment_id, trial_id)

    def _snapshot(self, ev: p.ResourceSnapshot) -> None:
        point = {
            "ts": ev.ts,
            "res": {r.name: [r.used, r.total] for r in ev.resources},
            "gpus": [[g.id, g.used, g.utilization, g.memory_used, g.memory_total] for g in ev.gpus],
        }
        self.machine.append(point)
        self.new_machine.append(point)
        for row in ev.running:
            s = self.series.setdefault(row.trial_id, Series())
            s.usage.append((ev.ts, row.cpu_percent, row.rss, row.gpu_memory))
            self._touch(row.experiment_id, row.trial_id)

    def complete(self, trial_id: str) -> bool:
        """Its whole curve is here (from events, or read from its result.json)."""
        s = self.series.get(trial_id)
        return s is not None and s.loaded

    def load_results(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        """Results read from a trial's result.json: the curve before our first event."""
        s = self.series.setdefault(trial_id, Series())
        if s.loaded:
            return
        live = Series()
        live.it, live.values = s.it, s.values
        s.it, s.values, s.sent, s.loaded = [], {}, 0, True
        first_live = live.it[0] if live.it else None
        for row in rows:
            it = row.get("training_iteration")
            if first_live is not None and isinstance(it, int) and it >= first_live:
                break
            s.add(row)
        for i, it in enumerate(live.it):
            s.add({"training_iteration": it, **{k: v[i] for k, v in live.values.items()}})
        exp_id = self.trial_experiment.get(trial_id, "")
        if exp_id:
            self._touch(exp_id, trial_id)

    # ------------------------------------------------------------ what pages get

    def experiment_row(self, exp: ExperimentSummary, now: float) -> dict[str, Any]:
        best = exp.best()
        counts = exp.counts()
        return {
            "id": exp.experiment_id,
            "name": exp.name,
            "path": exp.path,
            "state": exp.state(),
            "counts": counts,
            "total": len(exp.trials),
            "done": counts.get("TERMINATED", 0) + counts.get("ERROR", 0),
            "started": exp.started_at,
            "ended": exp.ended,
            "eta": exp.eta(now),
            "metric": exp.metric,
            "mode": exp.mode,
            "best": None
            if best is None
            else {
                "trial": best.trial_id,
                "value": _jsonable(best.last.get(exp.metric)),
                "config": {k: _jsonable(v) for k, v in best.config.items()},
            },
        }

    def trial_row(self, exp: ExperimentSummary, t: TrialSummary) -> dict[str, Any]:
        s = self.series.get(t.trial_id)
        return {
            "id": t.trial_id,
            "name": t.name,
            "status": t.status,
            "config": {k: _jsonable(v) for k, v in t.config.items()},
            "iter": t.iteration,
            "last": {k: _jsonable(v) for k, v in t.last.items() if k not in AUTO_KEYS},
            "best": best_of(s, exp.metric, exp.mode),
            "error": t.error,
            "started": t.started,
            "ended": t.ended,
        }

    def overview(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "kind": "overview",
            "experiments": [self.experiment_row(e, now) for e in self.experiments.values()],
            "machine": list(self.machine),
        }

    def experiment(self, exp_id: str, now: float | None = None) -> dict[str, Any] | None:
        exp = self.experiments.get(exp_id)
        if exp is None:
            return None
        now = time.time() if now is None else now
        trials = []
        for t in exp.trials.values():
            row = self.trial_row(exp, t)
            s = self.series.get(t.trial_id)
            row["series"] = s.points() if s is not None else None
            trials.append(row)
        return {"kind": "experiment", "experiment": self.experiment_row(exp, now), "trials": trials}

    def trial(self, trial_id: str) -> dict[str, Any] | None:
        exp = self.experiments.get(self.trial_experiment.get(trial_id, ""))
        t = exp.trials.get(trial_id) if exp is not None else None
        if exp is None or t is None:
            return None
        s = self.series.get(trial_id)
        return {
            **self.trial_row(exp, t),
            "experiment": exp.experiment_id,
            "traceback": t.traceback,
            "pid": t.pid,
            "resources": t.resources,
            "usage": [list(u) for u in s.usage] if s is not None else [],
        }

    def take_deltas(self, views: set[str], now: float | None = None) -> dict[str, dict[str, Any]]:
        """What changed since the last call: one message for the overview and one per
        experiment some page shows (``views``); marks everything as pushed."""
        now = time.time() if now is None else now
        out: dict[str, dict[str, Any]] = {}
        overview = {
            "kind": "delta",
            "experiments": [
                self.experiment_row(self.experiments[e], now)
                for e in self.dirty_experiments
                if e in self.experiments
            ],
            "machine": self.new_machine,
        }
        out[""] = overview
        for exp_id, trial_ids in self.dirty_trials.items():
            exp = self.experiments.get(exp_id)
            if exp is None:
                continue
            rows = []
            for trial_id in trial_ids:
                t = exp.trials.get(trial_id)
                if t is None:
                    continue
                row = self.trial_row(exp, t)
                s = self.series.get(trial_id)
                if s is not None:
                    if exp_id in views and s.sent < len(s.it):
                        row["series"] = s.points(s.sent)
                    if s.usage:
                        row["usage"] = list(s.usage[-1])
                    s.sent = len(s.it)
                rows.append(row)
            if exp_id in views:
                out[exp_id] = {"kind": "delta", "trials": rows}
        self.dirty_experiments.clear()
        self.dirty_trials.clear()
        self.new_machine = []
        return out

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_experiments or self.dirty_trials or self.new_machine)
