"""What a trial's folder holds, read back as plain data: its params, rows, error, checkpoint.

Below both ``Result`` (``Result.from_path``) and the experiment analysis, which
build their objects from it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...checkpoint import Checkpoint


def read_rows(trial_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every result the trial reported, from its ``result.json`` (NaN and inf included)."""
    rows: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for line in (Path(trial_dir) / "result.json").read_text().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
    return rows


def _latest_checkpoint(trial_dir: Path) -> Checkpoint | None:
    found = sorted(d for d in trial_dir.glob("checkpoint_*") if d.is_dir())
    return Checkpoint(str(found[-1])) if found else None


@dataclass
class TrialFolder:
    """A trial as its folder alone tells it."""

    path: Path
    config: dict[str, Any]
    last: dict[str, Any] | None  # its last reported row
    trial_id: str
    error_text: str | None  # error.txt, if it failed
    checkpoint: Checkpoint | None

    @property
    def error_line(self) -> str:
        """The error's last line (``ValueError: ...``), as Ray's first line of it."""
        text = (self.error_text or "").strip().splitlines()
        return next((ln for ln in reversed(text) if ln.strip()), "") or "trial failed"


def read_trial_folder(trial_dir: Path) -> TrialFolder:
    if not trial_dir.is_dir():
        raise FileNotFoundError(f"{trial_dir} is not a trial folder")
    config: dict[str, Any] = {}
    params = trial_dir / "params.json"
    if params.is_file():
        config = json.loads(params.read_text())
    rows = read_rows(trial_dir)
    if not params.is_file() and not rows:
        raise FileNotFoundError(f"{trial_dir} holds no params.json or result.json of a trial")
    last = dict(rows[-1]) if rows else None
    error_txt = trial_dir / "error.txt"
    return TrialFolder(
        path=trial_dir,
        config=config,
        last=last,
        trial_id=str((last or {}).get("trial_id", "")),
        error_text=error_txt.read_text() if error_txt.is_file() else None,
        checkpoint=_latest_checkpoint(trial_dir),
    )
