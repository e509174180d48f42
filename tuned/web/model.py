"""What the page shows, kept by the web process: the fold, curves, usage over time.

Pages get a snapshot of their view first, then deltas: each trial's new points
(``series.Series``) carry the index they start at, so a page that got a
snapshot between two pushes applies the next delta without double points, and
a retried trial whose iterations start again truncates its curve. Deltas are
built only for the experiments some page shows. An ended trial's part of a
snapshot is kept encoded until the trial changes: a thousand trials of a
hundred results are 3.8 MB of JSON, built once, not on every page's visit.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import msgspec
from tuned_client import protocol as p

from ..cli.eventfmt import AUTO_KEYS
from ..cli.summary import FINAL, ExperimentSummary, Fold, TrialSummary, short
from .series import USAGE_POINTS, Series, best_of

_json = msgspec.json.Encoder()


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
        # An ended trial's row and curve in a page's snapshot, as JSON: built when a page
        # first shows its experiment, reused by every later one until the trial changes.
        self.encoded: dict[str, msgspec.Raw] = {}

    @property
    def experiments(self) -> dict[str, ExperimentSummary]:
        return self.fold.experiments

    def _series(self, trial_id: str) -> Series:
        s = self.series.get(trial_id)
        if s is None:  # not setdefault: a Series (and its deque) per result adds up
            s = self.series[trial_id] = Series()
        return s

    def _touch(self, exp_id: str, trial_id: str = "") -> None:
        self.dirty_experiments.add(exp_id)
        if trial_id:
            self.dirty_trials.setdefault(exp_id, set()).add(trial_id)
            self.encoded.pop(trial_id, None)

    def add_reply(self, reply: p.ExperimentReply) -> None:
        exp = self.fold.add_reply(reply)
        for trial_id in exp.trials:
            self.trial_experiment[trial_id] = exp.experiment_id
            self.encoded.pop(trial_id, None)
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
            self._series(trial_id).add(changed.last)
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
            s = self._series(row.trial_id)
            s.usage.append((ev.ts, row.cpu_percent, row.rss, row.gpu_memory))
            self._touch(row.experiment_id, row.trial_id)

    def complete(self, trial_id: str) -> bool:
        """Its whole curve is here (from events, or read from its result.json)."""
        s = self.series.get(trial_id)
        return s is not None and s.loaded

    def load_results(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        """Results read from a trial's result.json: the curve before our first event."""
        s = self._series(trial_id)
        if s.loaded:
            return
        live = Series()
        live.it, live.values = s.it, s.values
        s.it, s.values, s.sent, s.loaded = [], {}, 0, True
        first_live = live.it[0] if live.it else None
        if first_live is not None:
            for cut, row in enumerate(rows):
                it = row.get("training_iteration")
                if isinstance(it, int) and it >= first_live:
                    rows = rows[:cut]
                    break
        s.add_rows(rows)
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
            "total": exp.total,
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
        trials: list[Any] = []
        for t in exp.trials.values():
            if (raw := self.encoded.get(t.trial_id)) is not None:
                trials.append(raw)
                continue
            row = self.trial_row(exp, t)
            s = self.series.get(t.trial_id)
            row["series"] = s.points() if s is not None else None
            if t.status in FINAL and (s is None or s.loaded):  # it will not change
                self.encoded[t.trial_id] = msgspec.Raw(_json.encode(row))
                trials.append(self.encoded[t.trial_id])
            else:
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
            if exp_id not in views:  # no page shows its trials: nothing to build
                for trial_id in trial_ids:
                    if (s := self.series.get(trial_id)) is not None:
                        s.sent = len(s.it)
                continue
            rows = []
            for trial_id in trial_ids:
                t = exp.trials.get(trial_id)
                if t is None:
                    continue
                row = self.trial_row(exp, t)
                s = self.series.get(trial_id)
                if s is not None:
                    if s.sent < len(s.it):
                        row["series"] = s.points(s.sent)
                    if s.usage:
                        row["usage"] = list(s.usage[-1])
                    s.sent = len(s.it)
                rows.append(row)
            out[exp_id] = {"kind": "delta", "trials": rows}
        self.dirty_experiments.clear()
        self.dirty_trials.clear()
        self.new_machine = []
        return out

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_experiments or self.dirty_trials or self.new_machine)
