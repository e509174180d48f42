"""A plain grid's trials are made by the daemon as its queue needs them, from the grid's plan.

fit() sends a plain grid as a ``GridPlan``; the daemon makes ``READY`` trials
ahead of admission, as Ray's ``BasicVariantGenerator`` makes them as the
experiment needs them. So a grid of a million points is accepted and
cancelled at once and holds a few hundred trials, not a million, and every
point still runs once, in Ray's order, through a crash and a restore.
"""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import RunningDaemon, restart_daemon
from daemons import start_script, tuned_ok
from gates import Gate, pass_gate, wait_until
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.errors import DaemonError

from tuned.daemon.intake import READY


def echo(config: dict[str, Any]) -> dict[str, Any]:
    """Reports its point; from ``config["wait_from"]`` on, only once the gate is open."""
    if config["i"] >= config["wait_from"]:
        pass_gate(config["gate"])
    return {"x": config["i"]}


def grid_tuner(n: int, gate: Path, wait_from: int, name: str, verbose: int = 0) -> tune.Tuner:
    return tune.Tuner(
        echo,
        param_space={
            "i": tune.grid_search(list(range(n))),
            "gate": str(gate),
            "wait_from": wait_from,
        },
        run_config=tune.RunConfig(name=name, verbose=verbose),
    )


def submit(d: RunningDaemon, tuner: tune.Tuner) -> p.Accepted:
    """Hand the Tuner's experiment to ``d`` as fit() does, and leave it there."""
    spec = tuner._experiment_spec()
    assert spec.grid is not None and spec.trials == []  # the plan, not the points
    accepted = d.ask(p.Submit(experiment=spec), p.Accepted)
    return accepted


def trials_of(d: RunningDaemon, exp_id: str) -> list[p.TrialInfo]:
    with d.connect() as conn:
        return conn.get_experiment(exp_id).trials


def summary_of(d: RunningDaemon, exp_id: str) -> p.ExperimentRow:
    return next(e for e in d.status().experiments if e.experiment_id == exp_id)


def finished(d: RunningDaemon, exp_id: str) -> bool:
    return summary_of(d, exp_id).finished


def test_a_grid_larger_than_the_queue_runs_every_point_once_in_order(
    daemon: RunningDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = READY + 40
    gate = Gate(tmp_path / "gate")
    gate.open()
    grid = grid_tuner(n, gate.path, n, "bigger", verbose=1).fit()
    assert re.search(rf"Number of trials\s*\S?\s*{n}\b", capsys.readouterr().out)
    assert grid.num_terminated == n and not grid.errors
    assert [r.metrics["x"] for r in grid] == list(range(n))  # Ray's order: trial k is point k
    with daemon.connect() as conn:
        reply = conn.get_experiment(next(e.experiment_id for e in daemon.status().experiments))
    assert [t.tag for t in reply.trials] == [f"{k}_i={k}" for k in range(n)]


@pytest.mark.daemon_args("--num-cpus", "1")
def test_a_million_point_grid_is_accepted_and_cancelled_at_once(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """One trial runs, a million wait; the daemon holds the plan and a few hundred trials."""
    n = 1_000_000
    gate = Gate(tmp_path / "gate")  # never opened: the first trial runs until cancelled
    accepted = submit(daemon, grid_tuner(n, gate.path, 0, "million"))
    exp_id = accepted.experiment_id
    assert 0 < len(accepted.trial_ids) <= READY  # the first ones are made at once
    wait_until(lambda: summary_of(daemon, exp_id).counts.get("RUNNING") == 1, "the first runs")
    summary = summary_of(daemon, exp_id)
    assert summary.counts == {"RUNNING": 1, "PENDING": n - 1}  # the whole grid is counted
    made = trials_of(daemon, exp_id)
    assert len(made) <= READY + 1  # the queue and the running one: not a million objects
    assert f"0/{n} done" in tuned_ok(daemon, "status")  # the user sees the whole grid
    daemon.ask(p.Cancel(target=exp_id), p.Ok)
    wait_until(lambda: finished(daemon, exp_id), "the cancelled grid ends")
    ended = trials_of(daemon, exp_id)
    assert len(ended) == len(made)  # points never made stay unmade, as in Ray
    assert {t.status for t in ended} <= {"ERROR", "TERMINATED"}
    assert "PENDING" not in summary_of(daemon, exp_id).counts


@pytest.mark.daemon_args("--num-cpus", "2", "--compact-bytes", "20000")
def test_a_grid_goes_on_from_where_it_was_after_a_sigkill(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """Killed mid-grid, with snapshots on the way: each point runs once, none is skipped."""
    n, wait_from = READY + 100, 100
    gate = Gate(tmp_path / "gate")
    exp_id = submit(daemon, grid_tuner(n, gate.path, wait_from, "killed")).experiment_id

    def done_before_the_gate() -> bool:
        return summary_of(daemon, exp_id).counts.get("TERMINATED", 0) == wait_from

    wait_until(done_before_the_gate, "the points before the gate end", timeout=120)
    assert (daemon.state_dir / "snapshot.bin").exists()  # the plan went through a snapshot
    daemon.stop(signal.SIGKILL)
    again = restart_daemon(daemon)
    gate.open()
    wait_until(lambda: finished(again, exp_id), "the grid ends after the restart", timeout=180)
    trials = trials_of(again, exp_id)
    assert [t.tag for t in trials] == [f"{k}_i={k}" for k in range(n)]
    assert {t.status for t in trials} == {"TERMINATED"}
    assert [msgspec.msgpack.decode(t.last_result)["x"] for t in trials] == list(range(n))


_RUN_AND_CANCEL = """
import sys
sys.path.insert(0, sys.argv[4])
from test_huge_grid import grid_tuner
grid = grid_tuner(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), "restored").fit()
print("ENDED", len(grid), flush=True)
"""


@pytest.mark.daemon_args("--num-cpus", "1")
def test_restoring_a_cancelled_grid_runs_the_points_it_never_made(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """As Ray's restore goes on with its variant generator: the grid ends whole."""
    n, wait_from = READY + 30, 3
    gate = Gate(tmp_path / "gate")
    script = start_script(
        daemon,
        tmp_path / "run.py",
        textwrap.dedent(_RUN_AND_CANCEL),
        str(n),
        str(gate.path),
        str(wait_from),
        str(Path(__file__).parent),
        stdout=subprocess.PIPE,
        text=True,
    )

    def blocked_at_the_gate() -> str:
        assert script.poll() is None, "the script ended before its grid ran"
        rows = daemon.status().experiments
        counts = rows[0].counts if rows else {}
        done = counts.get("TERMINATED") == wait_from and counts.get("RUNNING") == 1
        return rows[0].experiment_id if done else ""

    exp_id = wait_until(blocked_at_the_gate, "the points before the gate end")
    daemon.ask(p.Cancel(target=exp_id), p.Ok)  # as Ctrl-C in the script would
    out, _ = script.communicate(timeout=120)
    assert "ENDED" in out
    made = len(trials_of(daemon, exp_id))
    assert made < n  # cancelled before its grid was all made
    gate.open()
    path = summary_of(daemon, exp_id).path
    grid = tune.Tuner.restore(path, echo).fit()
    assert grid.num_terminated == n and not grid.errors
    assert sorted(r.metrics["x"] for r in grid) == list(range(n))


def test_a_grid_plan_that_cannot_make_its_trials_is_refused_whole(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """A bad plan is refused at submit, saying why, and nothing of it is taken."""
    gate = tmp_path / "gate"
    spec = grid_tuner(3, gate, 3, "bad")._experiment_spec()
    assert spec.grid is not None
    good = spec.grid
    bad_plans = [
        msgspec.structs.replace(
            good, axes=[p.GridAxis(path=["nope", "deeper"], values=good.axes[0].values)]
        ),
        msgspec.structs.replace(good, skeleton=msgspec.Raw(msgspec.msgpack.encode([1, 2]))),
        msgspec.structs.replace(good, repeats=-1),
    ]
    for plan in bad_plans:
        with daemon.connect() as conn, pytest.raises(DaemonError) as refused:
            conn.request(p.Submit(experiment=msgspec.structs.replace(spec, grid=plan)))
        assert refused.value.code == "bad_request"
        assert "grid plan is not usable" in refused.value.message
    with daemon.connect() as conn, pytest.raises(DaemonError) as refused:
        conn.request(p.Submit(experiment=msgspec.structs.replace(spec, open_ended=True)))
    assert "from a grid or from AddTrials" in refused.value.message
    assert daemon.status().experiments == []  # nothing taken
    accepted = submit(daemon, grid_tuner(3, gate, 3, "good"))
    with daemon.connect() as conn, pytest.raises(DaemonError) as refused:
        conn.request(p.AddTrials(experiment_id=accepted.experiment_id, trials=[]))
    assert "takes no more trials" in refused.value.message
