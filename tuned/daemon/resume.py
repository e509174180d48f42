"""``Tuner.restore`` on an experiment this daemon still has: queue its trials again."""

from __future__ import annotations

import time
from pathlib import Path

from tuned_client import protocol as p

from ..core.model import FINAL, trainable_file
from ..core.model import trial_id as make_trial_id
from ..errors import Refused
from ..store.private import write_private
from .base import DaemonBase
from .intake import folder_taken


class Resume(DaemonBase):
    def resume(self, req: p.ResumeExperiment) -> p.Accepted:
        """Queue again the given trials: ``resume`` from their checkpoints, ``restart`` anew.

        ``reopen``: a steered experiment takes more trials, until it is closed again.
        ``path``: the experiment's folder was moved there (the trials follow it).
        ``trainable``: the restoring script's trainable runs from now on, as in Ray.
        """
        exp_id, restart = req.experiment_id, list(req.restart)
        exp = self.experiment(exp_id)
        wanted = [*req.resume, *restart]
        found = [self.state.locate(tid) for tid in wanted]  # in memory or on disk
        bad = [tid for tid, at in zip(wanted, found, strict=True) if at is None]
        if bad or any(at is not None and at[0] is not exp for at in found):
            raise Refused("bad_request", f"trials {bad} are not in experiment {exp_id}")
        moved = req.path if req.path and Path(req.path) != exp.path else ""
        folder = Path(moved) if moved else exp.path
        if moved:  # the lock follows the folder (the old one may be gone)
            self.locks.release(exp.id)
        if (exp.done or moved) and not self.locks.hold(exp.id, folder):
            raise Refused("refused", folder_taken(folder, self.locks))
        if req.trainable:
            try:
                write_private(trainable_file(folder, exp.id), req.trainable)
            except OSError as exc:
                raise Refused("refused", f"cannot write the trainable: {exc}") from exc
        # Finished trials come back from the archive to run again.
        chosen = [self.archive.revive(exp, at[1]) for at in found if at is not None]
        self.control(
            "resume",
            exp_id,
            restart=restart,
            reopen=req.reopen and exp.spec.open_ended,
            path=moved,
            resume=list(req.resume) if moved else [],
        )
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
            total=exp.total,
        )
