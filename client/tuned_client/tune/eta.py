"""The ETA line of the status block: shown only when it can be known.

Ray's "Trial status" block has no ETA. tuned adds one line, right after Ray's
"Current time" line, and leaves Ray's own lines as Ray prints them (so what
reads Ray's output reads tuned's): ``Estimated time left: 00:01:23 (7 of 10
trials to go)``. It is known when the number of trials is (a sweep's, or a
searcher's ``num_samples``) and at least one has ended: the trials left times
the pace at which trials have ended so far, and never past the time budget.
Until then, and once all have ended, there is no line rather than a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .config import TuneConfig
from .trial import TrialView


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0.0) + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def eta_line(
    views: Iterable[TrialView], total: int, elapsed: float, budget_s: float | None = None
) -> str | None:
    """The line, or None when the time left cannot be known yet (or nothing is left)."""
    ended = sum(1 for v in views if v.status in ("TERMINATED", "ERROR"))
    if total <= 0 or ended == 0 or ended >= total or elapsed <= 0:
        return None
    left = elapsed / ended * (total - ended)
    if budget_s:
        left = min(left, max(budget_s - elapsed, 0.0))
    return f"Estimated time left: {_hms(left)} ({total - ended} of {total} trials to go)"


def total_trials(tc: TuneConfig, submitted: int, views: Sequence[TrialView]) -> int:
    """How many trials the experiment will have: a sweep's, the daemon says
    (``submitted``: those listed and those its grid will make); a
    searcher stops at ``num_samples``; the default generator of a steered sweep
    adds all of its at once (so they are the trials seen)."""
    if submitted:
        return submitted
    if tc.search_alg is None:
        return len(views)
    from .search.basic_variant import BasicVariantGenerator

    searcher = not isinstance(tc.search_alg, BasicVariantGenerator)
    return tc.num_samples if searcher else len(views)
