"""What ``fit()`` prints while it runs: the status block, trial output, errors, notices."""

from __future__ import annotations

import sys
import time
from typing import Any

from .. import protocol as p
from .fit_settings import FitSettings
from .progress import Reporter, render
from .trial import TrialView


class Console:
    """Everything the driver loop prints, in one place (verbosity as Ray's)."""

    def __init__(self, fit: FitSettings, accepted: p.Accepted, started: float) -> None:
        self.fit = fit
        self.accepted = accepted
        self.started = started
        verbose = fit.run_config.verbose
        self.reporter = Reporter(sys.stdout, 1 if verbose is None else verbose)
        self.interval = self.reporter.interval

    def _text(self, trials: dict[str, TrialView]) -> str:
        return render(
            list(trials.values()),
            started=self.started,
            logdir=self.accepted.path,
            capacity=self.accepted.capacity,
            metric=self.fit.tune_config.metric,
        )

    def on_event(self, event: Any, trials: dict[str, TrialView]) -> None:
        self.reporter.changed()

    def tick(self, trials: dict[str, TrialView]) -> None:
        self.reporter.maybe_print(lambda: self._text(trials))

    def final(self, trials: dict[str, TrialView]) -> None:
        self.reporter.maybe_print(lambda: self._text(trials), final=True)
        elapsed = time.time() - self.started
        if self.reporter.verbose > 0:
            print(
                f"Total run time: {elapsed:.2f} seconds "
                f"({elapsed:.2f} seconds for the tuning loop)."
            )

    def interrupted(self) -> None:
        print(
            "Stopping the experiment (Ctrl-C again to leave it running in the daemon); "
            f"continue it later with Tuner.restore({self.accepted.path!r}, trainable)",
            file=sys.stderr,
        )

    def daemon_lost(self, exc: BaseException) -> None:
        print(f"tuned: lost the daemon ({exc}); reconnecting", file=sys.stderr)

    def daemon_back(self) -> None:
        print("tuned: reconnected to the daemon", file=sys.stderr)
