"""When the script driving an experiment goes away: a grace period, then an interrupt.

An experiment whose searcher, scheduler or stop function runs in the user's
script (``Experiment.needs_driver``) cannot go on without it: nobody adds its
next trials or decides on its results. Its drivers are the connections that
submitted it or subscribed with ``decide`` (``serve.decisions``). When the last
one closes, the script may be gone (killed, crashed) or on its way back (it
reconnects after a daemon restart, or resubscribes after falling behind), so
the daemon waits ``Settings.driver_grace_s`` (30 s, as long as Ray Client keeps
a disconnected driver's session) and holds the reports that wait on a decision.
A driver back in time drives on, deciding on what is held.

Otherwise the experiment is *interrupted*: it takes no new trials; queued ones
end unstarted; running ones stop at their next report, whose checkpoint is
kept; each ends ERROR ``interrupted``, and the experiment ends with
``ExperimentFinished(interrupted=True)``, which lets its zygote and spares go.
``Tuner.restore`` resumes it, with the searcher and scheduler state the script
saved in the experiment folder.

Why stop the running trials instead of letting them run to their end: their
scheduler is gone, so every result past this point would be one it never saw.
ASHA would have stopped most of them at the next rung, and the GPU time spent
on the rest buys answers the experiment would not have given. Ray's driver
dying takes its trials with it, and its restore resumes them from their
checkpoints. Here they end cleanly at a report instead of being killed, and
restore resumes them, with the scheduler, from the checkpoint they had.
"""

from __future__ import annotations

import anyio
import structlog

from ..core.model import Experiment
from ..serve.handlers import release
from .outcomes import Outcomes

log = structlog.get_logger("tuned.daemon")


class Drivers(Outcomes):
    def driver_left(self, exp_id: str) -> None:
        """The experiment's last driving connection closed: wait for one to come back."""
        exp = self.experiments.get(exp_id)
        if self.stopping or exp is None or exp.done or exp.cancelled or not exp.needs_driver:
            return  # a daemon shutting down closes every connection: its scripts come back
        wait = self.decisions.orphan(exp_id)
        if self.tg is not None:
            self.tg.start_soon(self._grace, exp, wait, name=f"driver of {exp_id}")

    def expect_driver(self, exp: Experiment) -> None:
        """A recovered experiment needing a driver: its script may be reconnecting."""
        if exp.needs_driver and not exp.done and not self.decisions.deciding(exp.id):
            self.driver_left(exp.id)

    async def _grace(self, exp: Experiment, wait: int) -> None:
        await anyio.sleep(self.settings.driver_grace_s)
        if self.decisions.orphaned(exp.id, wait):
            await self.interrupt(exp)

    async def interrupt(self, exp: Experiment) -> None:
        """No driver came back: run nothing new, stop what runs at its next report."""
        held = self.decisions.abandon(exp.id)
        if exp.done or exp.cancelled or exp.interrupted:
            for h in held:  # none are held once it has ended; never leave one waiting
                await release(self, h, stop=False)
            return
        log.warning(
            "the script driving the experiment went away: interrupted (Tuner.restore resumes it)",
            experiment=exp.id,
            grace_s=self.settings.driver_grace_s,
        )
        self.control("interrupt", exp.id)
        for trial in list(exp.queue):
            self.finish(trial, "ERROR")  # never started: unfinished, as its error says
        for h in held:
            await release(self, h, stop=True)
        self.maybe_finish(exp)
        self.save_state(exp, force=True)
