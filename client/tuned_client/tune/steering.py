"""The client-side loop that drives the daemon for adaptive search and early stopping.

With a ``search_alg`` or a ``scheduler`` the experiment is submitted open-ended
and empty; this loop asks the searcher for configs as slots are about to free
(``AddTrials``), feeds every result to the searcher and the scheduler, and acts
on the scheduler's decisions: ``STOP`` -> ``StopTrial`` (the trial ends
TERMINATED at its next report and its resources go to the next trial at once),
PBT's exploit -> ``RestartTrial``. When the searcher is done it sends
``CloseExperiment``, and the daemon finishes the experiment as usual.

It follows the event stream with the plain ``Follower`` (status block,
callbacks, reconnects, stop rules) and hooks its decisions onto each event;
a trial waiting on a result goes on once they are made (``Follower.decide``).
Requests go over a second connection, so their replies never mix with events.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from .. import protocol as p
from ..connection import Connection, DaemonError
from ..framing import FrameError
from ..session import flat_get
from . import interrupts
from .config import TuneConfig
from .fit_settings import FitSettings, trainable_name
from .follower import Follower
from .link import open_connection
from .resources import resources_of, trial_bundles
from .result import TuneError
from .result_grid import ResultGrid
from .scheduler_state import save_scheduler
from .schedulers.trial_scheduler import FIFOScheduler, TrialScheduler
from .search.basic_variant import BasicVariantGenerator, _merge
from .search.sample import Domain
from .search.searcher import Searcher, save_searcher
from .search.variant_generator import format_vars, generate_variants, make_spec
from .spec import experiment_spec
from .trial import TrialView
from .tuner_state import discard_early_tuner, keep_tuner, storage_of

# Adaptive searchers get one queued trial at a time: each suggestion is made as
# late as possible, so it learns from every result that came before it.
MAX_PENDING_ADAPTIVE = 1


def check_steering(tc: TuneConfig) -> None:
    """Refuse, in the Tuner's constructor, what the steering loop cannot drive."""
    if tc.search_alg is not None and not isinstance(tc.search_alg, Searcher):
        raise TypeError(
            "TuneConfig(search_alg=...) must be a tune.search.Searcher (OptunaSearch, "
            f"ConcurrencyLimiter, BasicVariantGenerator...), got {type(tc.search_alg).__name__}"
        )
    if tc.scheduler is not None and not isinstance(tc.scheduler, TrialScheduler):
        raise TypeError(
            "TuneConfig(scheduler=...) must be a tune.schedulers.TrialScheduler (ASHAScheduler, "
            f"PopulationBasedTraining...), got {type(tc.scheduler).__name__}"
        )


def _flat_leaves(config: Any, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(config, dict):
        out: dict[tuple[Any, ...], Any] = {}
        for key, value in config.items():
            out.update(_flat_leaves(value, (*prefix, key)))
        return out
    return {prefix: config}


def _unresolved(config: Any) -> bool:
    return any(isinstance(v, Domain) for v in _flat_leaves(config).values())


class Steering:
    """Searcher and scheduler, and the requests their decisions become."""

    def __init__(
        self,
        fit: FitSettings,
        run: SteeredFollower,
        control: Connection,
        *,
        searcher_restored: bool = False,
        scheduler_restored: bool = False,
        added: int | None = None,
        aliases: dict[str, str] | None = None,
        closed: bool = False,
    ) -> None:
        """``*_restored``: ``Tuner.restore`` brought them back with their state, so they
        are not set up again; the trials ``run`` already holds count towards num_samples
        (``added``: so many, if more: a lost experiment's trials that run again under new
        ids, ``aliases`` mapping each new id to the one the searcher knows it by);
        ``closed``: a restored search that had ended adds no trials."""
        tc = fit.tune_config
        self.fit = fit
        self.run = run
        self.control = control
        self.experiment_id = run.accepted.experiment_id
        self.path = run.accepted.path
        self.scheduler: TrialScheduler = tc.scheduler or FIFOScheduler()
        self.searcher: Searcher = tc.search_alg or BasicVariantGenerator(random_state=tc.seed)
        implicit = False
        if isinstance(self.searcher, BasicVariantGenerator):
            implicit = self.searcher.implicit = self.searcher.implicit or tc.search_alg is None
        self.max_pending = 10**9 if implicit else MAX_PENDING_ADAPTIVE
        self.limit = 10**9 if isinstance(self.searcher, BasicVariantGenerator) else tc.num_samples
        self.aliases = aliases or {}
        if not searcher_restored:
            self._set_up_searcher()
        if not scheduler_restored:
            if not self.scheduler.set_search_properties(tc.metric, tc.mode):
                raise TuneError(
                    f"the scheduler's metric/mode ({self.scheduler.metric}, "
                    f"{self.scheduler.mode}) differ from TuneConfig's ({tc.metric}, {tc.mode})"
                )
            for view in run.trials.values():  # a restored run's trials, as Ray re-adds them
                self.scheduler.on_trial_add(self, view)
        # towards num_samples (a restored run's count too)
        self.added = len(run.trials) if added is None else added
        self.in_experiment = len(run.accepted.trial_ids)  # the daemon's next trial index
        self.closed = closed
        self.frozen = False
        self.pending: dict[str, str] = {}  # trial id -> "stop" | "restart", until it acts
        self.last_seq = 0

    def _set_up_searcher(self) -> None:
        tc = self.fit.tune_config
        if isinstance(self.searcher, BasicVariantGenerator):
            self.searcher.setup(self.fit.param_space, tc.num_samples, tc.seed)
        space = {} if isinstance(self.searcher, BasicVariantGenerator) else self.fit.param_space
        if not self.searcher.set_search_properties(tc.metric, tc.mode, space) and _unresolved(
            space
        ):  # as Ray: a searcher with a space of its own says False; domains left are an error
            raise ValueError(
                "You passed a `config` parameter to `tune.run()` with unresolved parameters, "
                "but the search algorithm was already instantiated with a search space. Make "
                "sure that `config` does not contain any more parameter definitions - include "
                "them in the search algorithm's search space if necessary."
            )

    # ------------------------------------------------------------ what schedulers call

    def get_trials(self) -> list[TrialView]:
        return list(self.run.trials.values())

    def stop_trial(self, trial: TrialView) -> None:
        if trial.trial_id in self.pending or trial.status not in ("PENDING", "RUNNING"):
            return
        self.pending[trial.trial_id] = "stop"
        self._request(p.StopTrial(trial_id=trial.trial_id))

    def restart_trial(
        self,
        trial: TrialView,
        config: dict[str, Any],
        checkpoint: str,
        resources: list[dict[str, float]] | None = None,
    ) -> None:
        """PBT's exploit; with ``resources``, ResourceChangingScheduler's new bundles."""
        if trial.trial_id in self.pending:
            return
        self.pending[trial.trial_id] = "restart"
        packed = p.pack_user(config)
        self._request(
            p.RestartTrial(
                trial_id=trial.trial_id,
                config=packed,
                checkpoint=checkpoint,
                resources=list(resources or []),
            )
        )
        trial.config = config

    @property
    def capacity(self) -> dict[str, float]:
        """The daemon's totals ("cpu", "gpu", ...), for schedulers that share them out."""
        return dict(self.run.accepted.capacity)

    def _request(self, request: Any) -> p.Message:
        """Send a decision; a daemon that went away is waited for, and it is sent again.

        The daemon journals a request before it replies, so one it took just before
        it died is not lost; the ones sent again are idempotent (stop, close) or
        checked (added trials must get the ids expected).
        """
        for attempt in range(2):
            try:
                return self.control.request(request)
            except DaemonError as exc:
                raise TuneError(exc.message) from None
            except (OSError, FrameError) as exc:
                if attempt:
                    raise
                self.control.close()
                self.control = self.run.reopen(exc)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ suggesting

    def _tag(self, index: int, config: dict[str, Any], suggestion: dict[str, Any]) -> str:
        if isinstance(self.searcher, BasicVariantGenerator):
            suffix = self.searcher.last_tag
        else:
            suffix = format_vars(_flat_leaves(suggestion))
        return f"{index}_{suffix}" if suffix else str(index)

    def _resolve(self, suggestion: dict[str, Any]) -> dict[str, Any]:
        if isinstance(self.searcher, BasicVariantGenerator):
            return suggestion
        merged = _merge(self.fit.param_space, suggestion)
        if _unresolved(merged) or "grid_search" in str(merged):
            merged = next(iter(generate_variants(merged, 1, seed=self.fit.tune_config.seed)))[1]
        return merged

    def fill(self) -> None:
        """Ask the searcher for trials until one waits for a slot (or it has no more)."""
        if self.closed or self.frozen:
            return
        specs: list[p.TrialSpec] = []
        views: list[TrialView] = []
        done = False  # the search is over: close once this batch is added
        while True:
            waiting = sum(1 for v in self.run.trials.values() if v.status == "PENDING")
            if waiting + len(specs) >= self.max_pending:
                break
            if self.added + len(specs) >= self.limit:
                done = True
                break
            index = self.added + len(specs)
            trial_id = f"{self.experiment_id}_{self.in_experiment + len(specs):05d}"
            suggestion = self.searcher.suggest(trial_id)
            if suggestion == Searcher.FINISHED:
                done = True
                break
            if suggestion is None or not isinstance(suggestion, dict):
                live = [v for v in self.run.trials.values() if v.status in ("PENDING", "RUNNING")]
                if not live and not specs:
                    print("The searcher suggests nothing and no trial runs: done", file=sys.stderr)
                    done = True
                break
            config = self._resolve(suggestion)
            tag = self._tag(index, config, suggestion)
            bundles = trial_bundles(resources_of(self.fit.trainable), make_spec(config))
            specs.append(p.TrialSpec(tag=tag, config=p.pack_user(config), resources=bundles))
            name = f"{trainable_name(self.fit.trainable)}_{trial_id}"
            views.append(TrialView(trial_id=trial_id, name=name, tag=tag, config=config))
        if specs:
            reply = self._request(p.AddTrials(experiment_id=self.experiment_id, trials=specs))
            assert isinstance(reply, p.TrialsAdded)
            for view, real_id in zip(views, reply.trial_ids, strict=True):
                if real_id != view.trial_id:
                    raise TuneError(f"trial ids out of step: {real_id} != {view.trial_id}")
                self.run.trials.setdefault(real_id, view)
                self.scheduler.on_trial_add(self, self.run.trials[real_id])
            self.added += len(specs)
            self.in_experiment += len(specs)
        if done:
            self._close()
        if specs or done:
            self._save()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._request(p.CloseExperiment(experiment_id=self.experiment_id))

    def _save(self) -> None:
        """The searcher and the scheduler as they are now, for ``Tuner.restore``."""
        try:
            save_searcher(self.searcher, self.path)
        except (NotImplementedError, OSError, TypeError) as exc:
            print(f"Could not save the searcher's state: {exc}", file=sys.stderr)
        try:
            save_scheduler(self.scheduler, self.path)
        except Exception as exc:  # a scheduler holding what cannot be pickled
            print(f"Could not save the scheduler's state: {exc}", file=sys.stderr)

    def freeze(self) -> None:
        """Ctrl-C, or a callback raised: the experiment is cancelled; what its trials do
        from now on (ending "cancelled") is not for the searcher or scheduler to learn,
        so ``Tuner.restore`` resumes them as they were, with the state saved now."""
        if not self.frozen:
            self.frozen = True
            self._save()

    def _sid(self, trial_id: str) -> str:
        """The id the searcher knows a trial by (its old one, if it ran again under a new)."""
        return self.aliases.get(trial_id, trial_id)

    # ------------------------------------------------------------ events

    def on_event(self, event: Any) -> None:
        if self.frozen or not isinstance(event, p.Event) or event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        view = self.run.trials.get(getattr(event, "trial_id", ""))
        if isinstance(event, p.TrialQueued) and view is not None:
            view.config = p.unpack_user(event.config)  # a restarted trial's new config
        elif isinstance(event, p.TrialStarted):
            self.pending.pop(event.trial_id, None)
            self.fill()
        elif isinstance(event, p.TrialResult) and view is not None:
            self._on_result(view, view.last_result or {})
        elif isinstance(event, p.TrialFinished) and view is not None:
            self.pending.pop(event.trial_id, None)
            if event.status == "ERROR" and event.error in (p.CANCELLED, p.INTERRUPTED):
                # Unfinished, not failed: Tuner.restore resumes it and the search; the
                # daemon takes no more trials now.
                self.closed = True
                self._save()
                return
            error = event.status == "ERROR"
            sid = self._sid(view.trial_id)
            self.searcher.on_trial_complete(sid, result=view.last_result, error=error)
            if error:
                self.scheduler.on_trial_error(self, view)
            else:
                self.scheduler.on_trial_complete(self, view, view.last_result)
            self.fill()
            self._save()

    def _on_result(self, view: TrialView, result: dict[str, Any]) -> None:
        if view.trial_id in self.pending:
            return  # the old attempt's last steps, reported after our decision
        if result.get("done") or self._stop_rule_met(result):
            self.searcher.on_trial_result(self._sid(view.trial_id), result)
            return
        decision = self.scheduler.on_trial_result(self, view, result)
        # after the scheduler, as Ray: HyperBandForBOHB marks the budget TuneBOHB reads
        self.searcher.on_trial_result(self._sid(view.trial_id), result)
        if decision in (TrialScheduler.STOP, TrialScheduler.PAUSE):
            self.stop_trial(view)  # PAUSE: a scheduler that restarted it is already pending

    def _stop_rule_met(self, result: dict[str, Any]) -> bool:
        stop = self.fit.run_config.stop
        if not isinstance(stop, dict):
            return False
        values = {k: flat_get(result, k) for k in stop}
        return any(isinstance(values[k], int | float) and values[k] >= v for k, v in stop.items())


class SteeredFollower(Follower):
    """The event follower, with the steering loop's decisions made on each event."""

    steering: Steering

    def on_event(self, event: Any) -> None:
        self.steering.on_event(event)

    def wants_stop(self, trial_id: str) -> bool:
        return trial_id in self.stopped or trial_id in self.steering.pending

    def on_interrupt(self) -> None:
        self.steering.freeze()


def fit_steered(fit: FitSettings) -> ResultGrid:
    """``Tuner.fit()`` with a searcher or a scheduler."""
    spec = experiment_spec(fit, steered=True)
    started = time.time()
    conn, autostarted = open_connection(fit.socket)
    try:
        with interrupts.held() as interrupted:  # Ctrl-C from here on cancels it
            try:
                accepted = conn.request(p.Submit(experiment=spec))
            except DaemonError as exc:
                discard_early_tuner(fit, storage_of(fit))
                raise TuneError(exc.message) from None
            assert isinstance(accepted, p.Accepted)
            keep_tuner(fit, accepted.path)
        return drive(
            fit, conn, accepted, started, autostarted=autostarted, interrupted=interrupted[0]
        )
    finally:
        conn.close()


def drive(
    fit: FitSettings,
    conn: Connection,
    accepted: p.Accepted,
    started: float,
    *,
    autostarted: bool = False,
    prepare: Callable[[SteeredFollower], None] | None = None,
    steering: dict[str, Any] | None = None,
    since: int = 0,
    interrupted: bool = False,
) -> ResultGrid:
    """Follow and steer the experiment ``accepted`` to its end (new, or restored).

    This process drives it (``Subscribe(decide=True)``): should it go away, the
    daemon waits a grace period for it to come back, then interrupts the experiment.
    ``prepare`` (restore) gives the run its trials and callbacks' state before the
    steering loop is set up with ``steering`` (``Steering``'s keywords). A Ctrl-C
    before the loop (``interrupted``, or one during the set-up: the searcher's
    first suggestions are user code) cancels the experiment once it begins.
    """
    run = SteeredFollower(fit, conn, accepted, started, autostarted=autostarted, decides=True)
    run.last_seq = since
    if prepare is not None:
        prepare(run)
    control = Connection.open(conn.socket_path, autostart=False)
    try:
        with interrupts.held() as early:
            run.steering = Steering(fit, run, control, **(steering or {}))
            run.setup_callbacks()  # before the first trials are added, as Ray calls it
            if not (interrupted or early[0]):
                run.steering.fill()
        return run.follow(since=since, interrupted=interrupted or early[0])
    finally:
        control.close()
        current: Steering | None = getattr(run, "steering", None)
        if current is not None:
            current.control.close()  # a new one, if the daemon came back from a restart
