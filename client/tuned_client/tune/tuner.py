"""``tune.Tuner``: generate the trials, hand them to the daemon, follow the events.

The experiment is submitted whole (configs known up front), so the daemon runs
it to the end even if this process goes away; ``fit()`` follows the event
stream (``follower``), prints the status block, drives callbacks, and builds
the ResultGrid. With a searcher or scheduler, the steering loop drives it; with
``Tuner.restore``, the restore module picks it up again.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from .. import protocol as p
from ..connection import DaemonError
from .config import RunConfig, TuneConfig
from .fit_settings import FitSettings
from .follower import Follower
from .link import open_connection
from .options import check_options
from .restore import can_restore, fit_restored, load_state, restore_flags
from .result import ResultGrid, TuneError
from .spec import experiment_spec
from .steering import check_steering, fit_steered
from .steering_state import load_steering
from .stopper.state import load_stopper
from .trainable import Trainable


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
        self._fit = FitSettings(
            trainable,
            dict(param_space or {}),
            tune_config or TuneConfig(),
            run_config or RunConfig(),
            _socket,
        )
        self._results: ResultGrid | None = None
        check_steering(self._fit.tune_config)
        check_options(self._fit)

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
        if self._restore is not None:
            self._results = fit_restored(self._fit, *self._restore)
            return self._results
        if self.tune_config.search_alg is not None or self.tune_config.scheduler is not None:
            self._results = fit_steered(self._fit)
            return self._results
        spec = experiment_spec(self._fit)
        started = time.time()
        conn, autostarted = open_connection(self._fit.socket)
        try:
            try:
                accepted = conn.request(p.Submit(experiment=spec))
            except DaemonError as exc:
                raise TuneError(exc.message) from None
            assert isinstance(accepted, p.Accepted)
            decides = spec.decide_results
            del spec  # every trial's spec, packed: the daemon has them, fit() need not hold them
            run = Follower(
                self._fit, conn, accepted, started, autostarted=autostarted, decides=decides
            )
            self._results = run.follow()
        finally:
            conn.close()
        return self._results

    _restore: tuple[str, dict[str, bool]] | None = None

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
        A searcher and scheduler go on as saved in the folder (as Ray's tuner.pkl
        and searcher state), unless ``tune_config`` gives others.
        """
        load_state(path)  # a clear error now rather than at fit()
        if tune_config is None and (saved := load_steering(path)) is not None:
            tune_config, saved_space = saved
            param_space = saved_space if param_space is None else param_space
        if (run_config is None or run_config.stop is None) and (
            saved_stop := load_stopper(path)
        ) is not None:  # the stopper goes on with the state it had (as Ray's)
            run_config = copy.copy(run_config or RunConfig())
            run_config.stop = saved_stop
        tuner = cls(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=run_config,
            _socket=_socket,
        )
        tuner._restore = (
            str(path),
            restore_flags(
                resume_errored=resume_errored,
                restart_errored=restart_errored,
                resume_unfinished=resume_unfinished,
            ),
        )
        return tuner

    @classmethod
    def can_restore(cls, path: str) -> bool:
        """True if ``path`` holds an experiment that ``Tuner.restore`` can continue."""
        return can_restore(path)

    def get_results(self) -> ResultGrid:
        if self._results is None:
            raise RuntimeError("fit() has not run yet")
        return self._results
