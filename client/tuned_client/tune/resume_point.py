"""Where a trial goes on, read from its folder: Ray's restore reads the trial folders too.

When the daemon has lost an experiment, ``Tuner.restore`` submits its
unfinished trials again, each with the point it goes on from
(``protocol.TrialResume``). The folder is the truth, not the experiment's
state file (written every half second at most): the latest checkpoint folder
that a row of ``result.json`` names (``checkpoint_dir_name``, as Ray writes
it) and that is whole on disk; that row's ``training_iteration`` and
``time_total_s``; and the sizes of ``result.json`` and ``progress.csv`` just
after it, so that the rows reported after the checkpoint are cut away before
the trial reports them again.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import protocol as p


def resume_point(trial_dir: Path) -> p.TrialResume:
    """The trial's latest checkpoint and where its result files end with it ("": none)."""
    found = _checkpoint_row(trial_dir)
    if found is None:  # no checkpoint: it starts over in its folder, its files emptied
        return p.TrialResume(dir=str(trial_dir))
    index, row, result_bytes = found
    iteration, total = row.get("training_iteration"), row.get("time_total_s")
    return p.TrialResume(
        dir=str(trial_dir),
        checkpoint=str(trial_dir / str(row["checkpoint_dir_name"])),
        iteration=iteration if isinstance(iteration, int) else index + 1,
        time_total_s=float(total) if isinstance(total, int | float) else 0.0,
        result_bytes=result_bytes,
        progress_bytes=_csv_end(trial_dir / "progress.csv", index + 1),
    )


def _checkpoint_row(trial_dir: Path) -> tuple[int, dict[str, object], int] | None:
    """(row index, row, bytes up to its end) of the last row naming a checkpoint on disk."""
    found = None
    offset = 0
    try:
        with open(trial_dir / "result.json", "rb") as f:
            for index, line in enumerate(f):
                if not line.endswith(b"\n"):
                    break  # torn by the crash: not a row
                offset += len(line)
                try:
                    row = json.loads(line)
                except ValueError:
                    break
                name = row.get("checkpoint_dir_name") if isinstance(row, dict) else None
                if isinstance(name, str) and name and (trial_dir / name).is_dir():
                    found = (index, row, offset)
    except FileNotFoundError:
        return None
    return found


def _csv_end(path: Path, rows: int) -> int:
    """The size of ``progress.csv`` up to the end of its ``rows``-th row after the header.

    A record may hold quoted newlines: it ends at a newline once its quotes pair up.
    """
    records = -1  # the header comes first
    offset = quotes = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                quotes += line.count(b'"')
                if quotes % 2 == 0:
                    records += 1
                    quotes = 0
                    if records == rows:
                        return offset
    except FileNotFoundError:
        return 0
    return offset  # fewer rows than result.json: keep what there is
