"""A trial's learning curve as the web process keeps it, and its usage samples.

Columnar (the iterations, and one list of numbers per metric), so a thousand
trials of a hundred results are a few megabytes, a delta is a slice of each
column, and a curve read from a result file is built column by column.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..cli.eventfmt import AUTO_KEYS
from ..cli.summary import number

USAGE_POINTS = 900  # 30 minutes of the daemon's 2 s samples, per trial and for the machine


@dataclass(slots=True)
class Series:
    """A trial's results as columns: ``it[i]`` is the iteration of ``values[m][i]``."""

    it: list[int] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    sent: int = 0  # points already pushed to pages
    usage: deque[tuple[float, float, int, int]] = field(
        default_factory=lambda: deque(maxlen=USAGE_POINTS)
    )  # (time, cpu %, rss, gpu memory)
    loaded: bool = False  # result.json was read (a trial that began before we did)

    def add(self, row: dict[str, Any]) -> None:
        it = row.get("training_iteration")
        if not isinstance(it, int):
            it = (self.it[-1] + 1) if self.it else 1
        if self.it and it <= self.it[-1]:
            self.cut(it)  # a retry reports these iterations again
        n = len(self.it)
        self.it.append(it)
        for key, value in row.items():
            if key in AUTO_KEYS:
                continue
            x = number(value)
            column = self.values.get(key)
            if column is None:
                if x is None:
                    continue
                column = self.values[key] = [None] * n
            column.append(x)
        for column in self.values.values():
            if len(column) == n:
                column.append(None)

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        """Many results at once (a result.json read on a page's first visit): column by
        column, where ``add`` goes row by row. Rows whose iterations are not a plain
        rising run after ours (a retry's, or none given) take ``add``'s way."""
        its = [row.get("training_iteration") for row in rows]
        if not _rising(its, self.it[-1] if self.it else 0):
            for row in rows:
                self.add(row)
            return
        names: dict[str, None] = {}
        keys: Any = None
        for row in rows:
            if row.keys() != keys:  # rows mostly share their keys: a comparison in C
                keys = row.keys()
                names.update(dict.fromkeys(k for k in keys if k not in AUTO_KEYS))
        n, k = len(self.it), len(rows)
        self.it.extend(its)  # type: ignore[arg-type]  # every one an int (checked above)
        for key in names:
            column = [number(row.get(key)) for row in rows]
            if key in self.values:
                self.values[key].extend(column)
            elif any(x is not None for x in column):
                self.values[key] = [*([None] * n), *column]
        for column in self.values.values():
            if len(column) < n + k:
                column.extend([None] * (n + k - len(column)))

    def cut(self, it: int) -> None:
        """Forget the points from iteration ``it`` on."""
        keep = 0
        while keep < len(self.it) and self.it[keep] < it:
            keep += 1
        del self.it[keep:]
        for column in self.values.values():
            del column[keep:]
        self.sent = min(self.sent, keep)

    def points(self, start: int = 0) -> dict[str, Any]:
        return {
            "from": start,
            "it": self.it[start:],
            "m": {k: v[start:] for k, v in self.values.items()},
        }


def _rising(its: list[Any], after: int) -> bool:
    """Every one an int, each above the one before (``after`` the first)."""
    for it in its:
        if type(it) is not int or it <= after:
            return False
        after = it
    return True


def best_of(series: Series | None, metric: str, mode: str) -> float | None:
    """The trial's best value of the metric over every result (the table's "best")."""
    if series is None or not metric or mode not in ("min", "max"):
        return None
    values = [v for v in series.values.get(metric, ()) if v is not None]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)
