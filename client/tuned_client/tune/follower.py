"""Following one experiment's events until it finishes: the driver loop of ``fit()``.

For each event, in Ray's order: the trial views are updated, the stop rules
and then the scheduler and searcher (``on_event``, the steering loop's hook)
see it, then the ``tune.Callback`` hooks run, and last, when the trial waits
on this result (``TrialResult.decide``), the decision goes back to the daemon,
which only then lets the trial run on. Everything else (status block,
reconnecting after a lost daemon, catching up after falling behind) is here
too, so a plain sweep, a steered one and a restored one follow alike.
"""

from __future__ import annotations

import contextlib
import pickle
import select
import sys
import time
from typing import Any

from .. import protocol as p
from ..connection import Connection
from ..framing import FrameError
from . import interrupts
from .callback import CallbackList
from .events_apply import fold, view_from_info
from .fit_settings import FitSettings
from .link import RECONNECT_TIMEOUT_S, STOPPED_WAIT_S, daemon_stopped, reconnect
from .logger.defaults import with_default_loggers
from .output import Console
from .result import TuneError
from .result_checks import check_result, needs_checks
from .result_grid import ResultGrid
from .results_builder import build_results
from .trial import TrialView

# How long fit() waits, after a callback raised, for the cancelled trials to stop.
CANCEL_WAIT_S = 30.0


class Follower:
    """Follows one experiment's events until it finishes."""

    def __init__(
        self,
        fit: FitSettings,
        conn: Connection,
        accepted: p.Accepted,
        started: float,
        *,
        autostarted: bool = False,
        decides: bool = False,
    ) -> None:
        self.fit = fit
        self.conn = conn
        self.accepted = accepted
        self.started = started
        self.autostarted = autostarted  # we started the daemon: start it again if it crashes
        self.decides = decides  # trials wait on our decision after each result
        self.trials: dict[str, TrialView] = {}
        self.callbacks = CallbackList(
            with_default_loggers(fit.run_config.callbacks, conn.socket_path, accepted)
        )
        self.console = Console(fit, accepted, started)
        self.iteration = 0
        self.last_seq = 0  # the last event seen: a reconnect resubscribes after it
        stop = fit.run_config.stop
        self.stopper = stop if callable(stop) else None
        self.stopped: set[str] = set()  # trials a stop rule or scheduler asked to stop
        # A stopper's state is saved with the experiment, for Tuner.restore (as Ray's).
        self.stopper_keeper: Any = None
        if self.stopper is not None:  # (a run without one never loads the stoppers)
            from .stopper.state import StopperKeeper

            self.stopper_keeper = StopperKeeper(self.stopper, accepted.path)
        self.name_creator = fit.tune_config.trial_name_creator
        self._set_up = False
        self._callbacks_saved = 0.0
        self.checks_results = needs_checks(fit)

    # ------------------------------------------------------------ hooks for the steering loop

    def on_event(self, event: Any) -> None:
        """The scheduler's and searcher's turn on an event (the steering loop overrides)."""

    def wants_stop(self, trial_id: str) -> bool:
        """Whether this client has asked the trial to stop (its decision on a result)."""
        return trial_id in self.stopped

    def search_ended(self) -> None:
        """Called once the experiment has finished (the steering loop saves its searcher)."""

    def on_interrupt(self) -> None:
        """The experiment is being cancelled (Ctrl-C, or a callback raised)."""

    def save_callbacks(self, now: bool = False) -> None:
        """The callbacks' state (``Callback.get_state``) beside the experiment, for
        ``Tuner.restore`` as Ray keeps it: when a trial ends, at most once a second,
        and when ``fit()`` ends."""
        if not self.callbacks or (not now and time.monotonic() - self._callbacks_saved < 1.0):
            return
        self._callbacks_saved = time.monotonic()
        try:
            self.callbacks.save_to_dir(self.accepted.path)
        except (OSError, TypeError, AttributeError, pickle.PicklingError) as exc:
            print(f"tuned: could not save the callbacks' state: {exc}", file=sys.stderr)

    # ------------------------------------------------------------ the loop

    def subscribe_request(self, since: int) -> p.Subscribe:
        return p.Subscribe(
            experiment_id=self.accepted.experiment_id, since=since, decide=self.decides
        )

    def setup_callbacks(self) -> None:
        """``Callback.setup`` with Ray's arguments, once, before the first trial is added."""
        if self._set_up:
            return
        self._set_up = True
        tc, rc = self.fit.tune_config, self.fit.run_config
        total = p.trial_count(self.accepted) or tc.num_samples
        self.callbacks.setup(
            stop=rc.stop,
            num_samples=tc.num_samples,
            total_num_samples=total,
            time_budget_s=tc.time_budget_s,
        )

    def follow(self, since: int = 0, interrupted: bool = False) -> ResultGrid:
        """Fold events until the experiment ends; its results.

        ``interrupted``: a Ctrl-C came before (``interrupts.held``): the
        experiment is cancelled at once, as one that comes now would cancel it.
        """
        with interrupts.held() as early:  # callbacks' setup is user code: Ctrl-C may come
            self.setup_callbacks()
            self.conn.send(self.subscribe_request(since))
        if interrupted or early[0]:
            self.console.interrupted()
            self.on_interrupt()
            self._send(p.Cancel(target=self.accepted.experiment_id))
        try:
            while True:
                try:
                    finished = self._pump()
                except KeyboardInterrupt:
                    if interrupted:
                        raise
                    interrupted = True
                    self.console.interrupted()
                    self.on_interrupt()
                    self._send(p.Cancel(target=self.accepted.experiment_id))
                    continue
                if finished:
                    break
            if interrupted:
                self.console.resumable(away=False)
        except BaseException:
            with contextlib.suppress(Exception):
                self.save_callbacks(now=True)
            if not interrupted:  # a callback or a stopper raised: end the experiment, as Ray
                self.on_interrupt()
                self._send(p.Cancel(target=self.accepted.experiment_id))
                with contextlib.suppress(BaseException):  # its trials stopped, as Ray's
                    self.drain(time.monotonic() + CANCEL_WAIT_S)
            raise
        return self.results()

    def drain(self, deadline: float) -> None:
        """Fold events (nothing else) until the experiment has finished, or ``deadline``:
        after a cancel, so that ``fit()`` returns once its trials have stopped and its
        state is saved, and a ``Tuner.restore`` right after finds them stopped."""
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.conn.sock], [], [], left)
            if not readable:
                return
            msg = self.conn.recv()
            if isinstance(msg, p.Event) and msg.seq > self.last_seq:
                self.last_seq = msg.seq
                fold(self.trials, msg)
                if isinstance(msg, p.ExperimentFinished):
                    return

    def results(self) -> ResultGrid:
        self.search_ended()
        self.console.final(self.trials)
        self.callbacks.on_experiment_end(trials=list(self.trials.values()))
        self.save_callbacks(now=True)
        if self.stopper_keeper is not None:
            self.stopper_keeper.save()
        tc = self.fit.tune_config
        return build_results(self.accepted, self.trials, tc.metric, tc.mode)

    def _pump(self) -> bool:
        """Handle what has arrived; True once the experiment has finished."""
        try:
            readable, _, _ = select.select([self.conn.sock], [], [], self.console.interval)
            if not readable:
                self.console.tick(self.trials)
                self.idle_step()
                return False
            msg = self.conn.recv()
        except (FrameError, OSError) as exc:  # the daemon went away (crash, restart, upgrade)
            self._reconnect(exc)
            return False
        done = self.apply(msg)
        self.console.tick(self.trials)
        return done

    def _reconnect(self, exc: BaseException) -> None:
        """The daemon went away: say so at once, then wait for it (a crash or a restart).

        A daemon stopped on purpose (``tuned stop``, the service stopped: its
        socket is gone) is not started again by us and is waited for briefly;
        one that crashed is waited for as long as ``TUNED_RECONNECT_TIMEOUT``.
        """
        self.conn.close()
        self.conn = self.reopen(exc, self.subscribe_request(self.last_seq))
        self.console.daemon_back()

    def reopen(self, exc: BaseException, subscribe: p.Subscribe | None = None) -> Connection:
        """A connection to the daemon that went away, once it is back (see ``_reconnect``).

        The steering loop's own connection comes back this way too: whichever of
        the two notices first waits, and starts the daemon again if we had.
        """
        stopped = daemon_stopped(self.fit.socket)
        wait_s = min(STOPPED_WAIT_S, RECONNECT_TIMEOUT_S) if stopped else RECONNECT_TIMEOUT_S
        self.console.daemon_lost(exc, stopped, wait_s)
        return reconnect(
            self.fit.socket,
            self.autostarted and not stopped,
            subscribe,
            self.accepted.path,
            wait_s,
        )

    def apply(self, msg: p.Message) -> bool:
        """One message from the daemon; True once the experiment has finished."""
        if isinstance(msg, p.Lagged):
            return self._resync()
        if isinstance(msg, p.Error):
            raise TuneError(msg.message)
        if isinstance(msg, p.Ok) or not isinstance(msg, p.Event):
            return False
        if msg.seq <= self.last_seq:
            return False  # already applied before a reconnect
        self.last_seq = msg.seq
        called = bool(self.callbacks)  # no callbacks: no hook is called, no list is built
        if called:
            trials = list(self.trials.values())
            self.callbacks.on_step_begin(iteration=self.iteration, trials=trials)
        hooks = fold(self.trials, msg)
        if isinstance(msg, p.TrialQueued) and self.name_creator is not None:
            view = self.trials[msg.trial_id]
            view.name = str(self.name_creator(view))  # Ray's trial_name_creator(trial)
        self.console.on_event(msg, self.trials)
        if isinstance(msg, p.TrialResult):
            if self.checks_results:
                check_result(self.fit, self.trials[msg.trial_id].last_result or {})
            if self.stopper is not None:
                self._stop_rules(msg.trial_id)
        self.on_event(msg)
        if called:
            trials = list(self.trials.values())
            for hook, kwargs in hooks:
                getattr(self.callbacks, hook)(iteration=self.iteration, trials=trials, **kwargs)
        if isinstance(msg, p.TrialResult) and msg.decide:
            self.decide(msg)
        elif called and isinstance(msg, p.TrialFinished):
            self.save_callbacks()
        self.iteration += 1
        if called:
            self.callbacks.on_step_end(iteration=self.iteration, trials=trials)
        if isinstance(msg, p.ExperimentFinished) and msg.interrupted:
            self.console.resumable(away=True)
        return isinstance(msg, p.ExperimentFinished)

    def idle_step(self) -> None:
        """A step of Ray's loop in which nothing happened: its callbacks still see it."""
        if self.callbacks:
            trials = list(self.trials.values())
            self.callbacks.on_step_begin(iteration=self.iteration, trials=trials)
            self.iteration += 1
            self.callbacks.on_step_end(iteration=self.iteration, trials=trials)

    def decide(self, result: p.TrialResult) -> None:
        """Let the trial waiting on this result go on, or stop it."""
        stop = self.wants_stop(result.trial_id)
        self._send(p.Decide(trial_id=result.trial_id, seq=result.seq, stop=stop))

    def _send(self, request: Any) -> None:
        with contextlib.suppress(OSError):  # the daemon went away; the next read reconnects
            self.conn.send(request)

    def _stop_rules(self, trial_id: str) -> None:
        """RunConfig(stop=callable or Stopper): stop the trials it picks."""
        view = self.trials[trial_id]
        assert self.stopper is not None
        if trial_id not in self.stopped and self.stopper(trial_id, view.last_result or {}):
            self.stop(trial_id)
        stop_all = getattr(self.stopper, "stop_all", None)
        if callable(stop_all) and stop_all():
            for tid, other in self.trials.items():
                if other.status in ("PENDING", "RUNNING"):
                    self.stop(tid)
        if self.stopper_keeper is not None:
            self.stopper_keeper.touched()

    def stop(self, trial_id: str) -> None:
        if trial_id not in self.stopped:
            self.stopped.add(trial_id)
            self._send(p.StopTrial(trial_id=trial_id))

    # ------------------------------------------------------------ falling behind

    def _resync(self) -> bool:
        """Rebuild the trial views from a snapshot after ``Lagged``; True if finished."""
        self.conn.close()
        self.conn = Connection.open(self.fit.socket, autostart=self.autostarted)
        reply = self.conn.get_experiment(self.accepted.experiment_id)
        self.absorb(reply)
        if reply.finished:
            return True
        self.conn.send(self.subscribe_request(reply.seq))
        return False

    def absorb(self, reply: p.ExperimentReply) -> None:
        for info in reply.trials:
            self.trials[info.trial_id] = view_from_info(info)
        self.last_seq = max(self.last_seq, reply.seq)
