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
from typing import TYPE_CHECKING, Any

import msgspec

from ... import protocol as p
from ...checkpoint import Checkpoint
from .metrics import flatten_dict, unflattened_lookup

if TYPE_CHECKING:
    from ..result import Result


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


def _latest_checkpoint(trial_dir: Path) -> Checkpoint | None:
    found = sorted(d for d in trial_dir.glob("checkpoint_*") if d.is_dir())
    return Checkpoint(str(found[-1])) if found else None


def result_from_info(info: p.TrialInfo, experiment_dir: Path) -> Result:
    from ..result import Result, trial_error

    path = info.path or str(experiment_dir / info.name)
    error = None
    if info.status == "ERROR":
        error = trial_error(info.error or "trial failed", info.traceback, info.trial_id, path)
    metrics: dict[str, Any] | None = p.unpack_user(info.last_result) if info.last_result else None
    if metrics is not None and info.status == "TERMINATED":
        metrics["done"] = True
    return Result(
        metrics,
        p.unpack_user(info.config),
        path,
        error=error,
        checkpoint=Checkpoint(info.checkpoint) if info.checkpoint else None,
        trial_id=info.trial_id,
        status=info.status,
    )


def result_from_folder(trial_dir: Path) -> Result:
    """A trial's Result from its folder alone (``Result.from_path``)."""
    from ..result import Result, trial_error

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
    trial_id = str((last or {}).get("trial_id", ""))
    error = None
    if error_txt.is_file():
        text = error_txt.read_text()
        first = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "")
        error = trial_error(first or "trial failed", text, trial_id, str(trial_dir))
    return Result(
        last,
        config,
        str(trial_dir),
        error=error,
        checkpoint=_latest_checkpoint(trial_dir),
        trial_id=trial_id,
        status="ERROR" if error is not None else "TERMINATED",
    )


def load_results(path: str | os.PathLike[str]) -> list[Result]:
    """Every trial of the experiment in ``path``, in trial order."""
    folder = Path(path).expanduser()
    if folder.is_file():  # Ray takes the state file itself too
        folder = folder.parent
    state = load_state(folder)
    if state is not None:
        return [result_from_info(info, folder) for info in state.trials]
    trials = (
        sorted(d for d in folder.iterdir() if d.is_dir() and (d / "params.json").is_file())
        if folder.is_dir()
        else []
    )
    if not trials:
        raise ValueError(
            f"No experiment found in {path}: it holds neither {p.EXPERIMENT_STATE_FILE} nor "
            "trial folders (with a params.json); pass the folder fit() printed as its logdir"
        )
    return [result_from_folder(d) for d in trials]


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


def results_dataframe(results: Iterable[Result], metric: str | None, mode: str | None) -> Any:
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
