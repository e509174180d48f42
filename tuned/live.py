"""The live view of ``tuned tail`` in a terminal: progress bars and the status block.

It folds events into the client's ``TrialView``s and redraws the whole screen
in place (cursor home, clear below) at most every ``min_interval`` seconds, and
once a second for the clocks. Output is cut to the terminal's height so the
redraw never scrolls; the last frame stays on screen when it ends.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tuned_client import protocol as p
from tuned_client.connection import Connection
from tuned_client.tune.progress import TrialView, render

from .eventfmt import AUTO_KEYS

HOME_CLEAR = "\x1b[H\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
BAR_WIDTH = 30


def _amount(name: str, value: float) -> str:
    return f"{value / 1024**3:.1f}G" if name == "memory" else f"{value:g}"


def _first_metric(trials: list[TrialView]) -> str | None:
    """The first metric the user reported (not one the session adds): worth a column."""
    for t in trials:
        for key in t.last_result or {}:
            if key not in AUTO_KEYS:
                return str(key)
    return None


@dataclass
class ExperimentView:
    experiment_id: str
    name: str
    path: str
    started: float
    trials: dict[str, TrialView] = field(default_factory=dict)
    finished: bool = False
    cancelled: bool = False


def progress_bar(views: list[TrialView], width: int = BAR_WIDTH) -> str:
    """``[#####.....] 12/40 done  (3 RUNNING, 25 PENDING, 10 TERMINATED, 2 ERROR)``."""
    total = len(views)
    counts: dict[str, int] = {}
    for v in views:
        counts[v.status] = counts.get(v.status, 0) + 1
    done = counts.get("TERMINATED", 0) + counts.get("ERROR", 0)
    filled = int(width * done / total) if total else 0
    order = ("RUNNING", "PENDING", "TERMINATED", "ERROR")
    detail = ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done  ({detail})"


class LiveView:
    tick = 1.0
    min_interval = 0.2

    def __init__(self, out: TextIO, experiment_id: str, socket_path: Path) -> None:
        self.out = out
        self.experiment_id = experiment_id
        self.experiments: dict[str, ExperimentView] = {}
        self.capacity = self._capacity(socket_path)
        self.last_draw = 0.0
        self.dirty = True
        self.usage = ""  # the daemon's latest resource snapshot, as one line
        self.out.write(HIDE_CURSOR)

    @staticmethod
    def _capacity(socket_path: Path) -> dict[str, float]:
        with Connection.open(socket_path, autostart=False, client="tuned-cli") as conn:
            reply = conn.request(p.GetStatus())
        assert isinstance(reply, p.StatusReply)
        return {r.name: r.total for r in reply.resources}

    # ------------------------------------------------------------ folding events

    def on_event(self, ev: Any) -> None:
        if isinstance(ev, p.ResourceSnapshot):
            self.usage = "  ".join(
                f"{r.name} {_amount(r.name, r.used)}/{_amount(r.name, r.total)}"
                for r in ev.resources
            )
            self.dirty = True
        if isinstance(ev, p.ExperimentAccepted):
            self.experiments[ev.experiment_id] = ExperimentView(
                ev.experiment_id, ev.name, ev.path, ev.ts
            )
        exp = self.experiments.get(ev.experiment_id)
        if exp is None:
            return  # an experiment that began before the history we were given
        trial = exp.trials.get(getattr(ev, "trial_id", ""))
        if isinstance(ev, p.TrialQueued):
            config = p.unpack_opaque(ev.config)
            exp.trials[ev.trial_id] = TrialView(
                ev.trial_id, ev.name, ev.tag, config if isinstance(config, dict) else {}
            )
        elif isinstance(ev, p.ExperimentFinished):
            exp.finished, exp.cancelled = True, ev.cancelled
        elif trial is None:
            return
        elif isinstance(ev, p.TrialStarted):
            trial.status, trial.pid, trial.resources = "RUNNING", ev.pid, dict(ev.resources)
        elif isinstance(ev, p.TrialResult):
            row = p.unpack_opaque(ev.metrics)
            trial.last_result = row if isinstance(row, dict) else None
        elif isinstance(ev, p.TrialRetrying):
            trial.status, trial.pid = "PENDING", 0
        elif isinstance(ev, p.TrialFinished):
            trial.status, trial.error = ev.status, ev.error
        self.dirty = True
        self.on_tick()

    def on_tick(self) -> None:
        now = time.monotonic()
        if now - self.last_draw < (self.min_interval if self.dirty else self.tick):
            return
        self.draw()

    # ------------------------------------------------------------ drawing

    def shown(self) -> list[ExperimentView]:
        """The followed experiment; or every unfinished one and the latest finished."""
        exps = list(self.experiments.values())
        if self.experiment_id:
            return [e for e in exps if e.experiment_id == self.experiment_id]
        active = [e for e in exps if not e.finished]
        done = [e for e in exps if e.finished][-1:]
        return done + active

    def text(self) -> str:
        exps = self.shown()
        what = f"experiment {self.experiment_id}" if self.experiment_id else "every experiment"
        lines = [f"tuned tail: {what}  ({time.strftime('%H:%M:%S')}, Ctrl-C to leave)"]
        if self.usage:
            lines.append(f"daemon: {self.usage}")
        if not exps:
            lines.append("waiting for an experiment to start...")
        for exp in exps:
            state = "cancelled" if exp.cancelled else "finished" if exp.finished else "running"
            views = list(exp.trials.values())
            lines.append(f"{exp.experiment_id} {exp.name} ({state})  {progress_bar(views)}")
        trials = [t for e in exps[-1:] for t in e.trials.values()]
        if exps:
            last = exps[-1]
            block = render(
                trials,
                started=last.started,
                logdir=last.path,
                capacity=self.capacity,
                metric=_first_metric(trials),
            )
            lines += ["", *block.rstrip("\n").splitlines()]
        return "\n".join(lines)

    def draw(self) -> None:
        size = shutil.get_terminal_size()
        lines = [line[: size.columns] for line in self.text().splitlines()]
        if len(lines) > size.lines - 1:
            lines = [*lines[: size.lines - 2], "..."]
        self.out.write(HOME_CLEAR + "\n".join(lines) + "\n")
        self.out.flush()
        self.last_draw = time.monotonic()
        self.dirty = False

    def close(self) -> None:
        try:
            self.draw()
            self.out.write(SHOW_CURSOR)
            self.out.flush()
        except (BrokenPipeError, OSError):
            pass
