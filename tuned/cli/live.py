"""The live view of ``tuned tail`` in a terminal, in 80 columns or more.

Each experiment's progress, ETA and best trial so far, then Ray's status block
with the last value of every metric the trials report, wrapped to the
terminal's width. It folds events (``tuned.cli.summary``) and redraws the whole screen
in place (cursor home, clear below) at most every ``min_interval`` seconds, and
once a second for the clocks. Output is cut to the terminal's height so the
redraw never scrolls; the last frame stays on screen when it ends.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, TextIO

from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonError

from .status import counts_text, trial_table
from .summary import ExperimentSummary, Fold, best_line, duration

HOME_CLEAR = "\x1b[H\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
BAR_WIDTH = 30
MAX_ROWS = 20


def _amount(name: str, value: float) -> str:
    return f"{value / 1024**3:.1f}G" if name == "memory" else f"{value:g}"


def progress_bar(exp: ExperimentSummary, width: int = BAR_WIDTH) -> str:
    """``[#####.....] 12/40 done  (3 RUNNING, 25 PENDING, 10 TERMINATED, 2 ERROR)``."""
    total = exp.total
    counts = exp.counts()
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
        self.fold = Fold()
        self.socket_path = socket_path
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
        elif self.fold.on_event(ev) is not None or self._fetched(ev):
            self.dirty = True
        self.on_tick()

    def _fetched(self, ev: Any) -> bool:
        """An event of an experiment accepted before our history (restored since, or
        recovered by a restarted daemon): fetch it whole, then it is followed."""
        exp_id = getattr(ev, "experiment_id", "")
        if not exp_id or exp_id in self.fold.experiments:
            return False
        try:
            with Connection.open(self.socket_path, autostart=False, client="tuned-cli") as c:
                reply = c.request(p.GetExperiment(experiment_id=exp_id))
        except DaemonError:
            return False  # it ended and was forgotten meanwhile
        assert isinstance(reply, p.ExperimentReply)
        self.fold.add_reply(reply)
        self.fold.on_event(ev)  # the reply may be older than the event
        return True

    def on_tick(self) -> None:
        now = time.monotonic()
        if now - self.last_draw < (self.min_interval if self.dirty else self.tick):
            return
        self.draw()

    # ------------------------------------------------------------ drawing

    def shown(self) -> list[ExperimentSummary]:
        """The followed experiment; or every unfinished one and the latest finished."""
        exps = list(self.fold.experiments.values())
        if self.experiment_id:
            return [e for e in exps if e.experiment_id == self.experiment_id]
        active = [e for e in exps if not e.finished]
        done = [e for e in exps if e.finished][-1:]
        return done + active

    def text(self, width: int = 80, height: int = 40) -> str:
        exps = self.shown()
        now = time.time()
        what = f"experiment {self.experiment_id}" if self.experiment_id else "every experiment"
        lines = [f"tuned tail: {what}  ({time.strftime('%H:%M:%S')}, Ctrl-C to leave)"]
        if self.usage:
            lines.append(f"daemon: {self.usage}")
        if not exps:
            lines.append("waiting for an experiment to start...")
        for exp in exps:
            eta = "" if exp.finished else f"  ETA {duration(exp.eta(now))}"
            lines.append(f"{exp.experiment_id} {exp.name} ({exp.state()}){eta}")
            lines.append(f"  {progress_bar(exp)}")
            best = best_line(exp, width - 2)
            if best:
                lines.append("  " + best)
        if exps:
            lines += ["", *self.status_block(exps[-1], now, width, height - len(lines) - 2)]
        return "\n".join(line[:width] for line in lines)

    def status_block(self, exp: ExperimentSummary, now: float, width: int, room: int) -> list[str]:
        """Ray's ``== Status ==`` block, narrowed: every metric, wrapped into ``width``."""
        trials = list(exp.trials.values())
        running = [t for t in trials if t.status == "RUNNING"]
        cpu = sum(t.resources.get("cpu", 0.0) for t in running)
        gpu = sum(t.resources.get("gpu", 0.0) for t in running)
        ended = exp.ended if exp.finished else now
        lines = [
            "== Status ==",
            f"Current time: {time.strftime('%Y-%m-%d %H:%M:%S')} "
            f"(running for {duration(ended - exp.started_at)})",
            f"Resources requested: {cpu:g}/{self.capacity.get('cpu', 0):g} CPUs, "
            f"{gpu:g}/{self.capacity.get('gpu', 0):g} GPUs",
            f"Result logdir: {exp.path}",
            f"Number of trials: {len(trials)}/{len(trials)} ({counts_text(exp.counts())})",
        ]
        order = {s: i for i, s in enumerate(("RUNNING", "ERROR", "TERMINATED", "PENDING"))}
        shown = sorted(trials, key=lambda t: order.get(t.status, 9))[:MAX_ROWS]
        table = trial_table(exp, shown, width)
        while len(shown) > 1 and len(lines) + len(table) + 1 > room:
            shown = shown[: max(len(shown) // 2, 1)]  # fewer rows; every column still shown
            table = trial_table(exp, shown, width)
        lines += table
        if len(shown) < len(trials):
            lines.append(f"... {len(trials) - len(shown)} more trials not shown")
        return lines

    def draw(self) -> None:
        size = shutil.get_terminal_size()
        text = self.text(size.columns, size.lines)
        lines = [line[: size.columns] for line in text.splitlines()]
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
