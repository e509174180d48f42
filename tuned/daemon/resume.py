"""``Tuner.restore`` on an experiment this daemon still has: queue its trials again."""

from __future__ import annotations

import time

from tuned_client import protocol as p

from ..core.model import FINAL
from ..core.model import trial_id as make_trial_id
from ..errors import Refused
from .base import DaemonBase
from .intake import folder_taken


class Resume(DaemonBase):
    def resume(
        self, exp_id: str, resume: list[str], restart: list[str], reopen: bool = False
    ) -> p.Accepted:
        """Queue again the given trials: ``resume`` from their checkpoints, ``restart`` anew.

        ``reopen``: it takes new trials again (its searcher goes on, ``AddTrials``).
        """
        exp = self.experiment(exp_id)
        wanted = [*resume, *restart]
        found = [self.state.locate(tid) for tid in wanted]  # in memory or on disk
        bad = [tid for tid, at in zip(wanted, found, strict=True) if at is None]
        if bad or any(at is not None and at[0] is not exp for at in found):
            raise Refused("bad_request", f"trials {bad} are not in experiment {exp_id}")
        if exp.done and not self.locks.hold(exp.id, exp.path):
            raise Refused("refused", folder_taken(exp.path, self.locks))
        # Finished trials come back from the archive to run again.
        chosen = [self.archive.revive(exp, at[1]) for at in found if at is not None]
        self.control("resume", exp_id, restart=list(restart), reopen=reopen)
        for trial in chosen:
            if trial.status in FINAL:
                self.emit_queued(trial)
        self.scheduler.remove(exp)
        self.scheduler.add(exp)
        exp.started_at = time.time()  # its time budget starts again
        self.after_submit(exp)
        self.wake()
        self.maybe_finish(exp)
        return p.Accepted(
            experiment_id=exp.id,
            path=str(exp.path),
            trial_ids=[make_trial_id(exp.id, i) for i in range(len(exp.trials))],
            capacity=self.capacity_totals(),
        )
