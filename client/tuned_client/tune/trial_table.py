"""The trial table of Ray Tune 2.x's console ("Trial status" block), fitted to the terminal.

Columns as Ray's ``experimental/output.py`` picks them: trial name, status, the
parameters that vary, Ray's default metric columns present in any result
(``iter``, ``total time (s)``, ...) and the first user metrics; rows grouped
by status in Ray's order, at most 5 per status beyond 20 trials. Ray does not
bound the width; this drops the last columns (and says so) to fit the
terminal, 80 columns when it cannot tell.
"""

from __future__ import annotations

import numbers
import shutil
from collections.abc import Sequence
from typing import Any

from ..session import flat_get
from .trial import TrialView
from .utils import flatten_dict

DEFAULT_COLUMNS = {
    "mean_accuracy": "acc",
    "mean_loss": "loss",
    "training_iteration": "iter",
    "time_total_s": "total time (s)",
    "timesteps_total": "ts",
    "episode_reward_mean": "reward",
}
# Keys Ray fills in on every result (AUTO_RESULT_KEYS), never shown as user metrics.
AUTO_RESULT_KEYS = frozenset(
    {
        "training_iteration",
        "time_this_iter_s",
        "timesteps_this_iter",
        "time_total_s",
        "timesteps_total",
        "date",
        "timestamp",
        "time_since_restore",
        "timesteps_since_restore",
        "iterations_since_restore",
        "config",
        "done",
        "trial_id",
        "experiment_tag",
        "pid",
        "hostname",
        "node_ip",
        "checkpoint_dir_name",
        "should_checkpoint",
        "experiment_id",
    }
)
ORDER = ["RUNNING", "TERMINATED", "PAUSED", "PENDING", "ERROR"]
MAX_TRIALS_IN_FULL = 20
ROWS_PER_STATUS = 5
MAX_CELL = 20


def terminal_width() -> int:
    return shutil.get_terminal_size((80, 24)).columns


def cell(value: Any, limit: int = MAX_CELL) -> str:
    """A value as Ray's table shows it: numbers in short form, long text cut from the left."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, numbers.Number):
        return str(value)
    text = str(value)
    return text if len(text) <= limit else "..." + text[3 - limit :]


def user_metrics(trials: Sequence[TrialView], limit: int = 4) -> list[str]:
    """The first ``limit`` numeric user metrics reported (Ray's ``_infer_user_metrics``)."""
    found: dict[str, None] = {}
    for t in trials:
        for key, value in (t.last_result or {}).items():
            if key in DEFAULT_COLUMNS or key in AUTO_RESULT_KEYS:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                found[key] = None
            if len(found) >= limit:
                return list(found)
    return list(found)


def varying_params(trials: Sequence[TrialView], limit: int = 8) -> list[str]:
    """Config keys whose values differ between trials (all of them for a single trial).

    A nested config's keys are flat, as Ray's parameter columns are (``model/lr``).
    """
    flat = [flatten_dict(t.config) for t in trials]
    keys: dict[str, None] = {}
    for config in flat:
        for k in config:
            keys.setdefault(k, None)
    if len(trials) > 1:
        keys = {k: None for k in keys if len({repr(c.get(k)) for c in flat}) > 1}
    return list(keys)[:limit]


def boxed(
    header: list[str], rows: list[list[str]], notes: Sequence[str] = (), right: bool = False
) -> list[str]:
    """A table drawn as Ray's (tabulate's ``rounded_outline``); ``right``: values right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    inner = sum(widths) + 2 * (len(widths) - 1)
    inner = max([inner, *(len(n) for n in notes)])
    numeric = [
        (right and i == len(header) - 1)
        or (all(_is_number(r[i]) for r in rows if r[i]) and any(r[i] for r in rows))
        for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "│ " + "  ".join(parts).ljust(inner) + " │"

    out = ["╭" + "─" * (inner + 2) + "╮", line(header), "├" + "─" * (inner + 2) + "┤"]
    out += [line(r) for r in rows]
    out += ["│ " + n.ljust(inner) + " │" for n in notes]
    out.append("╰" + "─" * (inner + 2) + "╯")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def trial_table(
    trials: Sequence[TrialView], params: list[str], metrics: list[str], width: int
) -> list[str]:
    """The table of every trial, grouped by status, no wider than ``width``."""
    metric_keys = [k for k in metrics if any(k in (t.last_result or {}) for t in trials)]
    header = ["Trial name", "status", *params, *(DEFAULT_COLUMNS.get(k, k) for k in metric_keys)]
    header = [cell(h) for h in header]
    capped = len(trials) > MAX_TRIALS_IN_FULL
    rows: list[list[str]] = []
    notes: list[str] = []
    by_status: dict[str, list[TrialView]] = {}
    for t in trials:
        by_status.setdefault(t.status, []).append(t)
    for status in ORDER + [s for s in by_status if s not in ORDER]:
        group = by_status.get(status, [])
        shown = group[:ROWS_PER_STATUS] if capped else group
        for t in shown:
            r = t.last_result or {}
            rows.append(
                [
                    str(t),
                    t.status,
                    *(cell(flat_get(t.config, k)) for k in params),
                    *(cell(r.get(k)) for k in metric_keys),
                ]
            )
        if len(group) > len(shown):
            more = f"... and {len(group) - len(shown)} more {status} ..."
            rows.append([more, *[""] * (len(header) - 1)])
    dropped = 0
    while len(header) > 2:
        table = boxed(header, rows, notes)
        if len(table[0]) <= width:
            return table
        header, rows = header[:-1], [r[:-1] for r in rows]
        dropped += 1
        notes = [f"({dropped} more column{'s' if dropped > 1 else ''} not shown)"]
    return boxed(header, rows, notes)
