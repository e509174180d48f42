"""The status block's ETA line (issue 17): shown only when it can be known.

Ray prints none; tuned adds one line after Ray's "Current time" line and keeps
Ray's own lines as Ray prints them (see ``tune/eta.py`` for why).
"""

from __future__ import annotations

import io
import time

from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune.eta import eta_line
from tuned_client.tune.fit_settings import FitSettings
from tuned_client.tune.output import Console
from tuned_client.tune.trial import TrialView


def _views(statuses: list[str]) -> list[TrialView]:
    return [
        TrialView(trial_id=f"e_{i:05d}", name=f"f_e_{i:05d}", tag=str(i), config={"i": i},
                  status=s)
        for i, s in enumerate(statuses)
    ]  # fmt: skip


def test_the_eta_is_the_trials_left_at_the_pace_trials_have_ended() -> None:
    views = _views(["TERMINATED", "ERROR", "RUNNING", "PENDING"])
    assert eta_line(views, 4, elapsed=10.0) == (
        "Estimated time left: 00:00:10 (2 of 4 trials to go)"
    )
    assert eta_line(views, 4, elapsed=10.0, budget_s=14.0) == (
        "Estimated time left: 00:00:04 (2 of 4 trials to go)"  # never past the budget
    )


def test_no_eta_before_a_trial_has_ended_or_once_all_have() -> None:
    assert eta_line(_views(["RUNNING", "PENDING"]), 2, elapsed=5.0) is None
    assert eta_line(_views(["TERMINATED", "TERMINATED"]), 2, elapsed=5.0) is None
    assert eta_line(_views(["TERMINATED", "RUNNING"]), 0, elapsed=5.0) is None  # total unknown


def test_the_status_block_keeps_rays_lines_and_adds_the_eta_after_current_time() -> None:
    fit = FitSettings(lambda config: None, {}, tune.TuneConfig(), tune.RunConfig(verbose=1))
    ids = [f"e_{i:05d}" for i in range(4)]
    accepted = p.Accepted(experiment_id="e", path="/x/e", trial_ids=ids, capacity={"cpu": 2.0})
    out = io.StringIO()
    console = Console(fit, accepted, started=time.time() - 8.0, out=out)
    views = _views(["TERMINATED", "RUNNING", "RUNNING", "PENDING"])
    console.tick({v.trial_id: v for v in views})
    lines = out.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Trial status:"))
    assert lines[at] == "Trial status: 1 TERMINATED | 2 RUNNING | 1 PENDING"
    assert lines[at + 1].startswith("Current time: ") and "Total running time: " in lines[at + 1]
    assert lines[at + 2].startswith("Estimated time left: 00:00:2")  # 3 left at 8 s each
    assert lines[at + 2].endswith("(3 of 4 trials to go)")
    assert lines[at + 3].startswith("Logical resource usage: ")
    assert all(len(line) <= 80 for line in lines[at : at + 4])
