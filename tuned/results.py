"""The results folder, laid out as Ray Tune users know it.

``<storage_path>/<experiment>/`` holds ``trainable.pkl`` and a folder per trial
with ``params.json``, ``result.json`` (a JSON line per report), ``progress.csv``,
``stdout``, ``stderr``, ``error.txt`` on failure and ``checkpoint_00000N/``.
Rows are written with plain appends before a report is acknowledged, so a
daemon killed right after still has them on disk.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import IO, Any

import msgspec
from tuned_client.protocol import json_default

_json = msgspec.json.Encoder(enc_hook=json_default)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+\-\[\]()]")
MAX_TAG = 100


def safe_component(text: str) -> str:
    """A single path component: no separators, no '..', never empty."""
    cleaned = _UNSAFE.sub("_", text).strip(".") or "_"
    return cleaned[:MAX_TAG]


def trial_dir_name(trainable: str, trial_id: str, tag: str, date: str) -> str:
    return safe_component(f"{trainable}_{trial_id}_{tag}_{date}")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_bytes(value: Any) -> bytes:
    return _json.encode(value)


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


class TrialFiles:
    """Open appenders for one running trial's result.json and progress.csv."""

    def __init__(self, trial_dir: Path, resume_at: tuple[int, int] = (0, 0)) -> None:
        self.dir = trial_dir
        result_path = trial_dir / "result.json"
        self._csv_path = trial_dir / "progress.csv"
        for path, size in ((result_path, resume_at[0]), (self._csv_path, resume_at[1])):
            if path.exists():
                os.truncate(path, size)
        self.checkpoint_offsets = resume_at
        self._result: IO[bytes] = open(result_path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._fields: list[str] | None = None
        if self._csv_path.exists() and self._csv_path.stat().st_size:
            with open(self._csv_path, newline="") as f:
                self._fields = next(csv.reader(f), None)
        self._progress: IO[str] = open(self._csv_path, "a", newline="")  # noqa: SIM115

    def append(self, row: dict[str, Any]) -> None:
        self._result.write(json_bytes(row) + b"\n")
        flat = _flatten(row)
        buf = io.StringIO()
        if self._fields is None:
            self._fields = list(flat)
            csv.writer(buf).writerow(self._fields)
        writer = csv.DictWriter(buf, self._fields, extrasaction="ignore")
        writer.writerow({k: _csv_cell(v) for k, v in flat.items()})
        self._progress.write(buf.getvalue())
        self._progress.flush()

    def mark_checkpoint(self) -> None:
        """Remember where the files end now: a retry from this checkpoint resumes here."""
        self.checkpoint_offsets = (self._result.tell(), self._progress.tell())

    def close(self) -> None:
        self._result.close()
        self._progress.close()


def _csv_cell(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json_default(value)


def select_kept(
    kept: list[tuple[str, float | None]], num_to_keep: int, by_score: bool, order: str
) -> tuple[list[tuple[str, float | None]], list[str]]:
    """``CheckpointConfig`` pruning: which checkpoints stay (oldest first) and which go.

    The best ``num_to_keep`` stay (the most recent ones when there is no score
    attribute; checkpoints without a score rank last), and the latest always
    stays too, since a retry or a restart resumes from it.
    """
    if num_to_keep <= 0 or len(kept) <= num_to_keep:
        return kept, []
    ranked = list(range(len(kept)))
    if by_score:
        sign = 1.0 if order == "max" else -1.0

        def rank(i: int) -> tuple[bool, float, int]:
            score = kept[i][1]
            return (score is not None, sign * score if score is not None else 0.0, i)

        ranked.sort(key=rank, reverse=True)
    else:
        ranked.reverse()
    stay = set(ranked[:num_to_keep]) | {len(kept) - 1}
    return [c for i, c in enumerate(kept) if i in stay], [
        c[0] for i, c in enumerate(kept) if i not in stay
    ]


def write_params(trial_dir: Path, config: Any) -> None:
    (trial_dir / "params.json").write_bytes(
        json.dumps(json.loads(json_bytes(config)), indent=2).encode()
    )


def write_error(trial_dir: Path, error: str, traceback: str) -> None:
    (trial_dir / "error.txt").write_text(traceback or error)
