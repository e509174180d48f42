"""``tune.Tuner``: generate the trials, hand them to the daemon, follow the events.

The experiment is submitted whole (configs known up front), so the daemon runs
it to the end even if this process goes away; ``fit()`` follows the event
stream (``follower``), prints the status block, drives callbacks, and builds
the ResultGrid. With a searcher or scheduler, the steering loop drives it; with
``Tuner.restore``, the restore module picks it up again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import protocol as p
from ..connection import DaemonError
from . import interrupts
from .config import RunConfig, TuneConfig
from .fit_settings import FitSettings
from .follower import Follower
from .link import open_connection
from .options import check_at_fit, check_options
from .restore import (
    can_restore,
    load_state,
    restore_flags,
    restored_settings,
    results_on_disk,
)
from .result import TuneError
from .result_grid import ResultGrid
from .spec import experiment_spec
from .trainable import Trainable
from .tuner_state import discard_early_tuner, keep_tuner, save_tuner_early, storage_of


class Tuner:
    """Runs a trainable over a parameter space (``ray.tune.Tuner``)."""

    def __init__(
        self,
        trainable: Callable[..., Any] | None = None,
        *,
        param_space: dict[str, Any] | None = None,
        tune_config: TuneConfig | None = None,
        run_config: RunConfig | None = None,
        _socket: str | None = None,
    ) -> None:
        if trainable is None or not callable(trainable):
            raise TypeError(
                "Tuner needs a trainable: a function taking a config dict "
                f"(got {type(trainable).__name__})"
            )
        if isinstance(trainable, type) and not issubclass(trainable, Trainable):
            raise TypeError(
                f"{trainable.__name__} is a class but not a tune.Trainable: pass a function "
                "taking a config dict, or subclass tune.Trainable"
            )
        if param_space is not None and not isinstance(param_space, dict):
            raise ValueError(
                "The `param_space` passed to the `Tuner` must be a dict. "
                f"Got '{type(param_space)}' instead."
            )
        self._setup(
            FitSettings(
                trainable,
                dict(param_space or {}),
                tune_config or TuneConfig(),
                run_config or RunConfig(),
                _socket,
            )
        )
        save_tuner_early(self._fit, storage_of(self._fit))

    def _setup(self, fit: FitSettings) -> None:
        self._fit = fit
        self._results: ResultGrid | None = None
        self._restore: tuple[str, dict[str, bool]] | None = None
        if fit.tune_config.search_alg is not None or fit.tune_config.scheduler is not None:
            from .steering import check_steering  # a plain sweep never loads the steering

            check_steering(fit.tune_config)
        check_options(fit)

    @property
    def trainable(self) -> Callable[..., Any]:
        return self._fit.trainable

    @property
    def param_space(self) -> dict[str, Any]:
        return self._fit.param_space

    @property
    def tune_config(self) -> TuneConfig:
        return self._fit.tune_config

    @property
    def run_config(self) -> RunConfig:
        return self._fit.run_config

    def _experiment_spec(self, steered: bool = False) -> p.ExperimentSpec:
        """The experiment as the daemon receives it (benchmarks submit it by hand)."""
        return experiment_spec(self._fit, steered)

    # ------------------------------------------------------------ running it

    def fit(self) -> ResultGrid:
        check_at_fit(self._fit)
        if self._restore is not None and load_state(self._restore[0]) is not None:
            from .resume import fit_restored

            self._results = fit_restored(self._fit, *self._restore)
            return self._results
        # a new experiment (or a restored Tuner whose experiment never reached a daemon)
        if self.tune_config.search_alg is not None or self.tune_config.scheduler is not None:
            from .steering import fit_steered

            self._results = fit_steered(self._fit)
            return self._results
        spec = experiment_spec(self._fit)
        started = time.time()
        conn, autostarted = open_connection(self._fit.socket)
        try:
            with interrupts.held() as interrupted:  # Ctrl-C from here on cancels it
                try:
                    accepted = conn.request(p.Submit(experiment=spec))
                except DaemonError as exc:
                    discard_early_tuner(self._fit, storage_of(self._fit))
                    raise TuneError(exc.message) from None
                assert isinstance(accepted, p.Accepted)
                decides = spec.decide_results
                del spec  # the trials' specs (or the grid's plan): the daemon has them
                keep_tuner(self._fit, accepted.path)
                run = Follower(
                    self._fit, conn, accepted, started, autostarted=autostarted, decides=decides
                )
            self._results = run.follow(interrupted=interrupted[0])
        finally:
            conn.close()
        return self._results

    @classmethod
    def restore(
        cls,
        path: str,
        trainable: Callable[..., Any],
        *,
        resume_unfinished: bool = True,
        resume_errored: bool = False,
        restart_errored: bool = False,
        param_space: dict[str, Any] | None = None,
        run_config: RunConfig | None = None,
        tune_config: TuneConfig | None = None,
        _socket: str | None = None,
    ) -> Tuner:
        """Continue an experiment from its folder (``ray.tune.Tuner.restore``).

        Finished trials keep their results; unfinished ones (and errored ones if
        asked) run again, from their latest checkpoint unless ``restart_errored``.
        The settings, searcher, scheduler and stopper are the saved ones; a
        ``run_config`` or ``tune_config`` given here (tuned's own) replaces
        those of their fields it sets.
        """
        path = str(Path(path).expanduser().absolute())
        fit = restored_settings(path, trainable, param_space, tune_config, run_config, _socket)
        tuner = cls.__new__(cls)
        tuner._setup(fit)
        tuner._restore = (
            path,
            restore_flags(
                resume_errored=resume_errored,
                restart_errored=restart_errored,
                resume_unfinished=resume_unfinished,
            ),
        )
        tuner._results = results_on_disk(fit, path)
        return tuner

    @classmethod
    def can_restore(cls, path: str | os.PathLike[str]) -> bool:
        """True if ``path`` is an experiment folder ``Tuner.restore`` can continue (as Ray:
        as soon as a Tuner named it, before it ran)."""
        return can_restore(path)

    def get_results(self) -> ResultGrid:
        if self._results is None:
            raise RuntimeError(
                "Can't return results as experiment has not been run, yet. "
                "Call `Tuner.fit()` to run the experiment first."
            )
        return self._results
