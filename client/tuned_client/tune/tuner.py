"""``tune.Tuner``: generate the trials, hand them to the daemon, follow the events.

The experiment is submitted whole (configs known up front), so the daemon runs
it to the end even if this process goes away; ``fit()`` follows the event
stream, prints the status block, drives callbacks, and builds the ResultGrid.
"""

from __future__ import annotations

import contextlib
import copy
import os
import select
import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import protocol as p
from ..connection import Connection, DaemonError
from ..paths import default_storage_path
from .callback import Callback, dispatch
from .config import FailureConfig, RunConfig, TuneConfig
from .parameters import parameters_folder
from .progress import Reporter, TrialView, render
from .resources import resources_of, to_bundles, trial_bundles
from .result import ResultGrid, TuneError
from .results_builder import build_results
from .search.variant_generator import generate_variants, make_spec
from .stopper.state import StopperKeeper, load_stopper
from .trainable import Trainable, to_function


def _trainable_name(trainable: Any) -> str:
    name = getattr(trainable, "__name__", None) or type(trainable).__name__
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "trainable"


def _stop_dict(stop: Any) -> dict[str, float]:
    if stop is None or callable(stop):
        return {}  # a callable or a Stopper is evaluated by the client (see _Run._stop_rules)
    if isinstance(stop, dict):
        bad = [k for k, v in stop.items() if not isinstance(v, int | float)]
        if bad:
            raise ValueError(f"RunConfig(stop=...) values must be numbers; {bad} are not")
        return {str(k): float(v) for k, v in stop.items()}
    raise TypeError(
        "RunConfig(stop=...) must be a dict like {'training_iteration': 10} "
        f"(callable and Stopper objects are not supported yet), got {type(stop).__name__}"
    )


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
        self.trainable = trainable
        self.param_space = dict(param_space or {})
        self.tune_config = tune_config or TuneConfig()
        self.run_config = run_config or RunConfig()
        self._socket = _socket
        self._results: ResultGrid | None = None
        from .steering import check_steering

        check_steering(self.tune_config)

    # ------------------------------------------------------------ building the experiment

    def _experiment_spec(self, steered: bool = False) -> p.ExperimentSpec:
        """The whole experiment; ``steered``: no trials yet (the steering loop adds them)."""
        tc, rc = self.tune_config, self.run_config
        name = _trainable_name(self.trainable)
        resources = resources_of(self.trainable)
        trials = []
        try:  # configs are copies of the space: what cannot be copied cannot be sent either
            variants = []
            if not steered:
                variants = list(generate_variants(self.param_space, tc.num_samples, seed=tc.seed))
        except (TypeError, copy.Error) as exc:
            raise TuneError(f"the param_space cannot be serialised: {exc}") from exc
        for index, (suffix, config) in enumerate(variants):
            bundles = trial_bundles(resources, make_spec(config))
            try:
                packed = p.pack_user(config)
            except Exception as exc:
                raise TuneError(f"trial {index}'s config cannot be serialised: {exc}") from exc
            tag = f"{index}_{suffix}" if suffix else str(index)
            trials.append(p.TrialSpec(tag=tag, config=packed, resources=bundles))
        failure = rc.failure_config or FailureConfig()
        storage = rc.storage_path or rc.local_dir or str(default_storage_path())
        exp_name = rc.name or f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        storage = os.path.abspath(os.path.expanduser(storage))
        try:  # with_parameters' large objects go to the experiment's folder, not the pickle
            with parameters_folder(os.path.join(storage, exp_name)):
                payload = cloudpickle.dumps(
                    to_function(self.trainable, rc.checkpoint_config, rc.stop)
                )
        except Exception as exc:
            raise TuneError(f"the trainable {name!r} cannot be pickled: {exc}") from exc
        return p.ExperimentSpec(
            name=exp_name,
            name_generated=not rc.name,
            storage_path=storage,
            trainable_name=name,
            trainable=payload,
            python=sys.executable,
            cwd=os.getcwd(),
            sys_path=[os.path.abspath(x) if x else os.getcwd() for x in sys.path],
            env=dict(os.environ),
            trials=trials,
            resources=to_bundles(None if callable(resources) else resources),
            max_concurrent_trials=tc.max_concurrent_trials or 0,
            max_failures=failure.max_failures,
            fail_fast=bool(failure.fail_fast),
            trial_timeout_s=float(tc.trial_timeout_s or 0.0),
            time_budget_s=float(tc.time_budget_s or 0.0),
            stop=_stop_dict(rc.stop),
            priority=tc.priority,
            open_ended=steered,
            metric=tc.metric or "",
            mode=tc.mode or "",
        )

    # ------------------------------------------------------------ running it

    def fit(self) -> ResultGrid:
        from .restore import fit_restored, open_connection

        if self._restore is not None:
            self._results = fit_restored(self, *self._restore)
            return self._results
        if self.tune_config.search_alg is not None or self.tune_config.scheduler is not None:
            from .steering import fit_steered

            self._results = fit_steered(self)
            return self._results
        spec = self._experiment_spec()
        _apply_checkpoint_config(spec, self.run_config)
        started = time.time()
        conn, autostarted = open_connection(self._socket)
        try:
            try:
                accepted = conn.request(p.Submit(experiment=spec))
            except DaemonError as exc:
                raise TuneError(exc.message) from None
            assert isinstance(accepted, p.Accepted)
            del spec  # every trial's spec, packed: the daemon has them, fit() need not hold them
            run = _Run(self, conn, accepted, started)
            run.autostarted = autostarted
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
        """
        from .restore import load_state, restore_flags

        load_state(path)  # a clear error now rather than at fit()
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
        from .restore import can_restore

        return can_restore(path)

    def get_results(self) -> ResultGrid:
        if self._results is None:
            raise RuntimeError("fit() has not run yet")
        return self._results


class _Run:
    """Follows one experiment's events until it finishes."""

    def __init__(
        self, tuner: Tuner, conn: Connection, accepted: p.Accepted, started: float
    ) -> None:
        self.tuner = tuner
        self.conn = conn
        self.accepted = accepted
        self.started = started
        self.trials: dict[str, TrialView] = {}
        verbose = tuner.run_config.verbose
        self.reporter = Reporter(sys.stdout, 1 if verbose is None else verbose)
        self.callbacks: list[Callback] = list(tuner.run_config.callbacks or [])
        self.iteration = 0
        self.last_seq = 0  # the last event seen: a reconnect resubscribes after it
        self.autostarted = False  # we started the daemon: start it again if it goes away
        self.stopper = tuner.run_config.stop if callable(tuner.run_config.stop) else None
        self.stopped: set[str] = set()
        # A stopper's state is saved with the experiment, for Tuner.restore (as Ray's).
        self.stopper_keeper = (
            StopperKeeper(self.stopper, accepted.path) if self.stopper is not None else None
        )

    def _status_text(self) -> str:
        return render(
            list(self.trials.values()),
            started=self.started,
            logdir=self.accepted.path,
            capacity=self.accepted.capacity,
            metric=self.tuner.tune_config.metric,
        )

    def follow(self, since: int = 0) -> ResultGrid:
        self.conn.send(p.Subscribe(experiment_id=self.accepted.experiment_id, since=since))
        interrupted = False
        while True:
            try:
                finished = self._pump()
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                print(
                    "Stopping the experiment (Ctrl-C again to leave it running in the daemon); "
                    f"continue it later with Tuner.restore({self.accepted.path!r}, trainable)",
                    file=sys.stderr,
                )
                self._send(p.Cancel(target=self.accepted.experiment_id))
                continue
            if finished:
                break
        return self.results()

    def results(self) -> ResultGrid:
        self.reporter.maybe_print(self._status_text, final=True)
        elapsed = time.time() - self.started
        if self.reporter.verbose > 0:
            print(
                f"Total run time: {elapsed:.2f} seconds "
                f"({elapsed:.2f} seconds for the tuning loop)."
            )
        dispatch(self.callbacks, "on_experiment_end", trials=list(self.trials.values()))
        if self.stopper_keeper is not None:
            self.stopper_keeper.save()
        tc = self.tuner.tune_config
        return build_results(self.accepted, self.trials, tc.metric, tc.mode)

    def _pump(self) -> bool:
        """Handle what has arrived; True once the experiment has finished."""
        from ..framing import FrameError
        from .restore import reconnect

        try:
            readable, _, _ = select.select([self.conn.sock], [], [], self.reporter.interval)
            if not readable:
                self.reporter.maybe_print(self._status_text)
                return False
            msg = self.conn.recv()
        except (FrameError, OSError):  # the daemon went away (crash, restart, upgrade)
            self.conn = reconnect(self)
            return False
        self.reporter.changed()
        done = self._apply(msg)
        self.reporter.maybe_print(self._status_text)
        return done

    def _apply(self, msg: p.Message) -> bool:
        from .events_apply import apply_event
        from .restore import resync

        if isinstance(msg, p.Lagged):
            return resync(self)
        if isinstance(msg, p.Error):
            raise TuneError(msg.message)
        if isinstance(msg, p.Ok):
            return False
        if isinstance(msg, p.Event):
            if msg.seq <= self.last_seq:
                return False  # already applied before a reconnect
            self.last_seq = msg.seq
        self.iteration += 1
        done = apply_event(self, msg)
        if isinstance(msg, p.TrialResult) and self.stopper is not None:
            self._stop_rules(msg.trial_id)
        return done

    def _send(self, request: Any) -> None:
        with contextlib.suppress(OSError):  # the daemon went away; the next read reconnects
            self.conn.send(request)

    def _stop_rules(self, trial_id: str) -> None:
        """RunConfig(stop=callable or Stopper): ask the daemon to stop trials it picks."""
        view = self.trials[trial_id]
        assert self.stopper is not None
        if trial_id not in self.stopped and self.stopper(trial_id, view.last_result or {}):
            self.stopped.add(trial_id)
            self._send(p.StopTrial(trial_id=trial_id))
        stop_all = getattr(self.stopper, "stop_all", None)
        if callable(stop_all) and stop_all():
            for tid, other in self.trials.items():
                if tid not in self.stopped and other.status in ("PENDING", "RUNNING"):
                    self.stopped.add(tid)
                    self._send(p.StopTrial(trial_id=tid))
        if self.stopper_keeper is not None:
            self.stopper_keeper.touched()


def _apply_checkpoint_config(spec: p.ExperimentSpec, rc: RunConfig) -> None:
    """CheckpointConfig travels in the spec: the daemon prunes as checkpoints come."""
    cc = rc.checkpoint_config
    if cc is None:
        return
    if cc.num_to_keep is not None and cc.num_to_keep < 1:
        raise ValueError(
            f"CheckpointConfig(num_to_keep=...) must be at least 1 or None, got {cc.num_to_keep}"
        )
    if cc.checkpoint_score_order not in ("max", "min"):
        raise ValueError(
            "CheckpointConfig(checkpoint_score_order=...) must be 'max' or 'min', "
            f"got {cc.checkpoint_score_order!r}"
        )
    spec.num_to_keep = cc.num_to_keep or 0
    spec.checkpoint_score_attribute = cc.checkpoint_score_attribute or ""
    spec.checkpoint_score_order = cc.checkpoint_score_order
