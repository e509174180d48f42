"""Reading an experiment, or one trial, back from its folder.

The daemon keeps ``experiment_state.msgpack`` in the experiment folder (every
trial's id, name, config, status, error and last result); a folder without
it (copied from elsewhere, or a single trial's) is read from the trial
folders' own files: ``params.json``, ``result.json``, ``error.txt``,
``checkpoint_*``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ... import protocol as p
from ...checkpoint import Checkpoint
from .metrics import flatten_dict, unflattened_lookup


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


def load_state(path: Path) -> p.ExperimentState | None:
    file = path / p.EXPERIMENT_STATE_FILE
    if not file.is_file():
        return None
    try:
        return msgspec.msgpack.decode(file.read_bytes(), type=p.ExperimentState)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{file} is damaged: {exc}") from exc


def moved_trials(state: p.ExperimentState, folder: Path) -> list[p.TrialInfo]:
    """The state's trials, their folders and checkpoints under ``folder`` where the
    experiment was moved (or renamed) since it ran, as Ray finds a moved experiment."""
    old = os.path.join(state.spec.storage_path, state.spec.name)
    new = str(folder.expanduser().absolute())
    if old == new or not state.spec.storage_path:
        return list(state.trials)

    def rebase(value: str) -> str:
        return new + value[len(old) :] if value == old or value.startswith(old + "/") else value

    return [
        msgspec.structs.replace(i, path=rebase(i.path), checkpoint=rebase(i.checkpoint))
        for i in state.trials
    ]


def latest_checkpoint(trial_dir: Path) -> Checkpoint | None:
    found = sorted(d for d in trial_dir.glob("checkpoint_*") if d.is_dir())
    return Checkpoint(str(found[-1])) if found else None


def _pick_row(rows: Sequence[dict[str, Any]], metric: str | None, mode: str | None) -> Any:
    if not mode or not metric:
        return rows[-1] if rows else None
    scored = [
        (float(v), i)
        for i, r in enumerate(rows)
        if isinstance(v := unflattened_lookup(metric, r), int | float)
        and not isinstance(v, bool)
        and not math.isnan(v)
    ]
    if not scored:
        return None
    # pandas' idxmax/idxmin: the first row holding the extreme value
    best = max(scored, key=lambda s: (s[0], -s[1])) if mode == "max" else min(scored)
    return rows[best[1]]


def results_dataframe(results: Iterable[Any], metric: str | None, mode: str | None) -> Any:
    """Ray's ``ExperimentAnalysis.dataframe``: a row per trial that reported anything."""
    import pandas as pd

    if mode and mode not in ("min", "max"):
        raise ValueError("If set, `mode` has to be one of [min, max]")
    if mode and not metric:
        raise ValueError(
            "If a `mode` is passed to `ExperimentAnalysis.dataframe(), you'll also have to "
            "pass a `metric`!"
        )
    rows = []
    for result in results:
        history = result.history() if (metric and mode) else []
        if not history:
            last = result.peek_metrics()
            history = [dict(last)] if last else []
        row = _pick_row(history, metric, mode)
        if row is None:
            continue
        flat = flatten_dict(row)
        flat.update(flatten_dict({"config": result.config or {}}))
        flat["logdir"] = result.path
        rows.append(flat)
    return pd.DataFrame(rows)
