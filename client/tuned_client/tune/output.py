"""What ``fit()`` prints while it runs, as Ray Tune 2.x prints it.

``verbose`` has Ray's meaning (``RunConfig(verbose=...)``, default 1): 0 prints
nothing; 1 the "Trial status" block (at the start, every 30 s while something
changes, at the end), each trial's start with its config and its end with its
last result; 2 and 3 also each intermediate result. A failed trial's
traceback goes to stderr with the path of its error file, whatever the
verbosity. A ``progress_reporter`` (``tune.CLIReporter``,
``JupyterNotebookReporter``) or ``RAY_AIR_NEW_OUTPUT=0`` selects Ray's older
"== Status ==" block instead.

Each trial's stdout and stderr reach this terminal, every line prefixed with
``(<trainable> pid=<pid>)`` as Ray prints a trial's output, unless
``RunConfig(log_to_file=...)`` keeps them in files.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from .. import protocol as p
from ..session import flat_get
from .eta import eta_line, total_trials
from .fit_settings import FitSettings, trainable_name
from .progress_reporter import CLIReporter, ProgressReporter
from .trial import TrialView
from .trial_output import TrialOutput
from .trial_table import (
    DEFAULT_COLUMNS,
    boxed,
    cell,
    terminal_width,
    trial_table,
    user_metrics,
    varying_params,
)
from .utils import flatten_dict

HEARTBEAT_S = 30.0  # Ray's TuneTerminalReporter._heartbeat_freq
AUTO_ROWS = ("time_this_iter_s", "time_total_s", "training_iteration", "checkpoint_dir_name")
HIDDEN = frozenset(
    {
        "config", "date", "done", "hostname", "iterations_since_restore", "node_ip", "pid",
        "time_since_restore", "timestamp", "trial_id", "experiment_tag", "should_checkpoint",
    }
)  # fmt: skip


def _clock(started: float) -> tuple[str, str]:
    """Now, and the time since ``started``, as Ray's ``_get_time_str`` writes them."""
    rest = max(0.0, time.time() - started)
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    running = f"{days:.0f} days, " if days else ""
    running += f"{hours:02.0f}:{minutes:02.0f}:{seconds:05.2f}"
    return time.strftime("%Y-%m-%d %H:%M:%S"), running


def searched(param_space: dict[str, Any]) -> list[str]:
    """The space's searched keys, flat (Ray's ``_infer_params``): its domains and grids."""
    from .search.sample import Domain

    keys = []
    for key, value in flatten_dict(param_space).items():
        if isinstance(value, Domain):
            keys.append(key)
        if key.endswith("/grid_search"):
            keys.append(key.removesuffix("/grid_search"))
    return keys


def _rows(key: Any, value: Any) -> list[list[str]]:
    """A config's or result's rows, as Ray's ``_render_table_item``: a nested dict is one
    ``key/sub`` row per leaf, sorted, its leaves shown as they are (no float rounding)."""
    if not isinstance(value, dict):
        return [[str(key), _value(value)]]
    return [
        [f"{key}/{sub}", cell(leaf, 20)]
        for sub, leaf in sorted(flatten_dict(value).items(), key=lambda kv: str(kv[0]))
    ]


def _value(value: Any) -> str:
    """A value in a trial's config or result table, as Ray's ``_render_table_item``."""
    if isinstance(value, float):
        return f"{value:.5f}".rstrip("0")
    return "" if value is None else cell(value, 40)


def _scheduler_name(fit: FitSettings) -> str:
    scheduler = fit.tune_config.scheduler
    return type(scheduler).__name__ if scheduler is not None else "FIFOScheduler"


def _scheduler_line(fit: FitSettings) -> str:
    """The legacy block's scheduler line: the scheduler's own ``debug_string()``."""
    scheduler = fit.tune_config.scheduler
    debug = getattr(scheduler, "debug_string", None)
    return str(debug()) if callable(debug) else "Using FIFO scheduling algorithm."


def _searcher_name(fit: FitSettings) -> str:
    searcher = fit.tune_config.search_alg
    return type(searcher).__name__ if searcher is not None else "BasicVariantGenerator"


def _verbosity(fit: FitSettings) -> int:
    verbose = fit.run_config.verbose
    value = 1 if verbose is None else int(getattr(verbose, "value", verbose))
    if value not in (0, 1, 2, 3):
        raise ValueError(f"RunConfig(verbose=...) must be 0, 1, 2 or 3, got {verbose!r}")
    return value


class Console:
    """Everything the driver loop prints, in one place."""

    def __init__(
        self, fit: FitSettings, accepted: p.Accepted, started: float, out: TextIO | None = None
    ) -> None:
        self.fit = fit
        self.accepted = accepted
        self.started = started
        self.out = out or sys.stdout
        self.verbose = _verbosity(fit)
        reporter = fit.run_config.progress_reporter
        if reporter is None and os.environ.get("RAY_AIR_NEW_OUTPUT", "1") == "0":
            reporter = CLIReporter()
        if reporter is not None and not isinstance(reporter, ProgressReporter):
            raise TypeError(
                "RunConfig(progress_reporter=...) must be a tune.ProgressReporter "
                f"(CLIReporter, JupyterNotebookReporter), got {type(reporter).__name__}"
            )
        self.legacy: ProgressReporter | None = reporter
        if reporter is not None:
            reporter.setup(
                start_time=started,
                metric=fit.tune_config.metric,
                mode=fit.tune_config.mode,
                scheduler_line=_scheduler_line(fit),
                logdir=accepted.path,
                capacity=accepted.capacity,
            )
        self.interval = 0.5  # how often the loop wakes with nothing arrived: trial output
        self.last_heartbeat = 0.0
        self.dirty = True
        self.output = TrialOutput(
            trainable_name(fit.trainable), fit.run_config.log_to_file, self.out, sys.stderr
        )
        self.header_done = False

    # ------------------------------------------------------------ the loop's calls

    def on_event(self, event: Any, trials: dict[str, TrialView]) -> None:
        self.dirty = True
        if not self.header_done:
            self._header(trials)
        view = trials.get(getattr(event, "trial_id", ""))
        if view is None:
            return
        if isinstance(event, p.TrialStarted):
            self.output.started(view)
            if self.verbose >= 1 and self.legacy is None:
                self._trial_line(view, "started with configuration:")
                self._dict_table(f"Trial {view} config", view.config)
        elif isinstance(event, p.TrialResult) and self.verbose >= 2 and self.legacy is None:
            result = view.last_result or {}
            it = result.get("training_iteration")
            now, running = _clock(self.started)
            self._print(
                f"\nTrial {view} finished iteration {it} at {now}. Total running time: {running}"
            )
            self._result_table(view, result)
        elif isinstance(event, p.TrialCheckpoint) and self.verbose >= 2 and self.legacy is None:
            it = (view.last_result or {}).get("training_iteration", "?")
            self._print(f"Trial {view} saved a checkpoint for iteration {it} at: {event.path}")
        elif isinstance(event, p.TrialFinished):
            self.output.drain(view)
            self.output.finished(view)
            self._finished(view)

    def tick(self, trials: dict[str, TrialView]) -> None:
        self.output.poll(trials)
        if self.verbose < 1:
            return
        if self.legacy is not None:
            if self.dirty and self.legacy.should_report(list(trials.values())):
                self._legacy_report(trials, done=False)
                self.dirty = False
            return
        if trials and self.dirty and time.monotonic() - self.last_heartbeat >= HEARTBEAT_S:
            self._heartbeat(trials)

    def final(self, trials: dict[str, TrialView]) -> None:
        self.output.poll(trials, final=True)
        if self.verbose >= 1:
            if self.legacy is not None:
                self._legacy_report(trials, done=True)
            else:
                self._heartbeat(trials)
            elapsed = time.time() - self.started
            self._print(
                f"Total run time: {elapsed:.2f} seconds "
                f"({elapsed:.2f} seconds for the tuning loop)."
            )
        errored = [t for t in trials.values() if t.status == "ERROR"]
        if errored:
            rows = [[str(t), "1", t.error_file or ""] for t in errored]
            table = boxed(["Trial name", "# failures", "error file"], rows)
            text = f"\nNumber of errored trials: {len(errored)}\n" + "\n".join(table)
            self._print(text, err=True)

    # ------------------------------------------------------------ notices

    def interrupted(self) -> None:
        self._print(
            "Stopping the experiment: running trials are stopped, queued ones dropped "
            "(Ctrl-C again to stop waiting for them); continue it later with "
            f"Tuner.restore({self.accepted.path!r}, trainable)",
            err=True,
        )

    def resumable(self, away: bool) -> None:
        """The experiment ended unfinished (Ctrl-C, or interrupted while we were away)."""
        if away:
            self._print(
                "tuned: this script was away longer than the daemon waits for a driver "
                "(tuned start --driver-grace), so it interrupted the experiment",
                err=True,
            )
        self._print(  # Ray's words
            "Experiment has been interrupted, but the most recent state was saved.\n"
            f'Continue running this experiment with: Tuner.restore(path="{self.accepted.path}", '
            "trainable=...)",
            err=True,
        )

    def daemon_lost(self, exc: BaseException, stopped: bool, wait_s: float) -> None:
        how = "was stopped" if stopped else f"went away ({exc})"
        self._print(
            f"tuned: the daemon {how} while fit() ran; waiting up to {wait_s:g} s for it to "
            "come back (Ctrl-C to leave). Trials that were running resume from their last "
            f"checkpoint when it does, or later with Tuner.restore({self.accepted.path!r}, ...)",
            err=True,
        )

    def daemon_back(self) -> None:
        self._print("tuned: the daemon is back; following the experiment again", err=True)

    # ------------------------------------------------------------ pieces

    def _legacy_report(self, trials: dict[str, TrialView], done: bool) -> None:
        """Ray calls the reporter's ``report``: a subclass that overrides it (or
        JupyterNotebookReporter, which draws in the cell) is heard as in Ray."""
        assert self.legacy is not None
        self.out.flush()
        self.legacy.report(list(trials.values()), done)
        sys.stdout.flush()

    def _print(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else self.out
        stream.write(text + "\n")
        stream.flush()

    def _header(self, trials: dict[str, TrialView]) -> None:
        self.header_done = True
        if self.verbose < 1 or self.legacy is not None:
            return
        name = os.path.basename(self.accepted.path)
        rows = [
            ["Search algorithm", _searcher_name(self.fit)],
            ["Scheduler", _scheduler_name(self.fit)],
            ["Number of trials", str(p.trial_count(self.accepted) or len(trials) or "?")],
        ]
        self._print("\n".join(boxed(["Configuration for experiment", name], rows)))
        self._print(f"\nView detailed results here: {self.accepted.path}\n")

    def _heartbeat(self, trials: dict[str, TrialView]) -> None:
        self.last_heartbeat = time.monotonic()
        self.dirty = False
        views = list(trials.values())
        counts: dict[str, int] = {}
        for t in views:
            counts[t.status] = counts.get(t.status, 0) + 1
        now, running = _clock(self.started)
        cap = self.accepted.capacity
        cpu = sum(t.resources.get("cpu", 0.0) for t in views if t.status == "RUNNING")
        gpu = sum(t.resources.get("gpu", 0.0) for t in views if t.status == "RUNNING")
        lines = [
            "",
            "Trial status: " + " | ".join(f"{n} {s}" for s, n in counts.items()),
            f"Current time: {now}. Total running time: {running}",
        ]
        tc = self.fit.tune_config
        total = total_trials(tc, p.trial_count(self.accepted), views)
        eta = eta_line(views, total, time.time() - self.started, tc.time_budget_s)
        if eta is not None:  # tuned's one line of its own: Ray's stay as Ray prints them
            lines.append(eta)
        lines.append(
            f"Logical resource usage: {cpu:g}/{cap.get('cpu', 0):g} CPUs, "
            f"{gpu:g}/{cap.get('gpu', 0):g} GPUs"
        )
        best = self._best(views)
        if best is not None:
            metric = self.fit.tune_config.metric
            value = (best.last_result or {}).get(metric or "")
            params = {k: flat_get(best.config, k) for k in searched(self.fit.param_space)}
            lines.append(
                f"Current best trial: {best.trial_id} with {metric}={value} and params={params}"
            )
        metrics = [*DEFAULT_COLUMNS, *user_metrics(views)]
        lines += trial_table(views, varying_params(views), metrics, terminal_width())
        self._print("\n".join(lines))

    def _best(self, views: list[TrialView]) -> TrialView | None:
        metric, mode = self.fit.tune_config.metric, self.fit.tune_config.mode
        if not metric or not mode:
            return None
        sign = 1.0 if mode == "max" else -1.0
        best: TrialView | None = None
        best_value = float("-inf")
        for t in views:
            value = (t.last_result or {}).get(metric)
            if not isinstance(value, int | float) or value != value:  # NaN
                continue
            if best is None or value * sign > best_value:
                best, best_value = t, value * sign
        return best

    def _trial_line(self, view: TrialView, what: str) -> None:
        self._print(f"\nTrial {view} {what}")

    def _finished(self, view: TrialView) -> None:
        if view.status != "ERROR" and (self.verbose < 1 or self.legacy is not None):
            return  # nothing to print: its result stays packed, unread
        result = view.last_result or {}
        iters = result.get("training_iteration", 0)
        now, running = _clock(self.started)
        if view.status == "ERROR":
            if view.traceback:
                text = f"Trial task failed for trial {view}\n{view.traceback.rstrip()}"
                self._print(text, err=True)
            self._print(
                f"\nTrial {view} errored after {iters} iterations at {now}. "
                f"Total running time: {running}\nError file: {view.error_file}",
                err=True,
            )
            return
        if self.verbose >= 1 and self.legacy is None:
            self._print(
                f"\nTrial {view} completed after {iters} iterations at {now}. "
                f"Total running time: {running}"
            )
            self._result_table(view, result)

    def _result_table(self, view: TrialView, result: dict[str, Any]) -> None:
        auto = [k for k in AUTO_ROWS if k in result]
        rest = sorted(k for k in result if k not in HIDDEN and k not in AUTO_ROWS)
        rows = [row for k in auto + rest for row in _rows(k, result[k])]
        self._print("\n".join(boxed([f"Trial {view} result", ""], rows, right=True)))

    def _dict_table(self, title: str, data: dict[str, Any]) -> None:
        ordered = sorted(data.items(), key=lambda kv: str(kv[0]))
        rows = [row for k, v in ordered for row in _rows(k, v)]
        self._print("\n".join(boxed([title, ""], rows, right=True)))
