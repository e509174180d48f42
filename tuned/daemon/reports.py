"""A trial's reports: rows written to its files, checkpoints taken in, events for both.

The rows go to ``result.json`` and ``progress.csv`` before the report is
acknowledged (written behind, within ``RESULT_FLUSH_S``, or at once with a
checkpoint); the state follows from the ``TrialCheckpoint`` and ``TrialResult``
events, as it does when the journal is replayed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from tuned_client import protocol as p

from ..core.model import Trial
from ..core.reducer import position
from ..errors import Refused
from .base import DaemonBase


def checkpoint_score(spec: p.ExperimentSpec, row: dict[str, Any]) -> float | None:
    value = row.get(spec.checkpoint_score_attribute) if spec.checkpoint_score_attribute else None
    return float(value) if isinstance(value, int | float) else None


class Reports(DaemonBase):
    def on_report(self, trial: Trial, report: p.Report, decide: bool = False) -> p.TrialResult:
        row = p.unpack_opaque(report.metrics)
        if not isinstance(row, dict):
            raise Refused("bad_request", "a report's metrics must be a dict")
        files = self.runner.files(trial)
        try:
            files.append(row, flush=bool(report.checkpoint))
        except OSError as exc:  # disk full: the trial fails alone, the daemon serves on
            trial.error = trial.traceback = (
                f"OSError: cannot write the trial's results in {files.dir}: {exc.strerror or exc}"
            )
            raise Refused("refused", trial.error) from exc
        exp_id = trial.experiment.id
        if report.checkpoint:
            path = self._checkpoint_path(trial, report.checkpoint)
            files.mark_checkpoint()
            iteration, time_total = position(row, trial)
            self.emit(
                p.TrialCheckpoint,
                experiment_id=exp_id,
                trial_id=trial.id,
                path=path,
                iteration=iteration,
                time_total_s=time_total,
                result_bytes=files.checkpoint_offsets[0],
                progress_bytes=files.checkpoint_offsets[1],
                score=checkpoint_score(trial.experiment.spec, row),
            )
        event: p.TrialResult = self.emit(
            p.TrialResult,
            experiment_id=exp_id,
            trial_id=trial.id,
            metrics=msgspec.Raw(bytes(report.metrics)),
            decide=decide,
        )
        return event

    @staticmethod
    def _checkpoint_path(trial: Trial, path: str) -> str:
        """The reported checkpoint, which must be a folder of the trial's own."""
        cp = Path(path).resolve()
        if trial.dir is None or cp.parent != trial.dir.resolve() or not cp.is_dir():
            raise Refused("bad_request", f"checkpoint {path!r} is not in the trial's folder")
        return str(cp)
