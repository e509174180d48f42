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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest
from conftest import RunningDaemon, restart_daemon
from daemons import start_script, tuned_ok, use_daemon
from gates import Gate, pass_gate, wait_until
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.errors import DaemonError
from tuned_client.tune.restore import load_state

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
    folder = Path(summary.path)  # the state file, rewritten as trials change, stays small:
    assert (folder / p.EXPERIMENT_STATE_FILE).stat().st_size < 200_000
    wait_until(lambda: (folder / p.GRID_PLAN_FILE).exists(), "the plan, written once")
    assert (folder / p.GRID_PLAN_FILE).stat().st_size > 4_000_000  # the values are there
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


_FIT = """
import sys
sys.path.insert(0, sys.argv[4])
from test_huge_grid import grid_tuner
grid = grid_tuner(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), "restored").fit()
print("ENDED", len(grid), flush=True)
"""


def fit_in_a_script(
    d: RunningDaemon, tmp_path: Path, n: int, gate: Gate, wait_from: int
) -> subprocess.Popen[str]:
    """A user's script running ``grid_tuner(...).fit()`` against ``d``; its output piped."""
    return start_script(
        d,
        tmp_path / "run.py",
        _FIT,
        str(n),
        str(gate.path),
        str(wait_from),
        str(Path(__file__).parent),
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.daemon_args("--num-cpus", "1")
def test_restoring_a_cancelled_grid_runs_the_points_it_never_made(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """As Ray's restore goes on with its variant generator: the grid ends whole."""
    n, wait_from = READY + 30, 3
    gate = Gate(tmp_path / "gate")
    script = fit_in_a_script(daemon, tmp_path, n, gate, wait_from)

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


def test_a_grid_whose_later_values_do_not_decode_ends_with_what_it_made(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """Submit checks each piece's length, not every value: a value no decoder takes
    (bytes that are not UTF-8, in a string) ends that grid when it is reached, and
    the daemon serves on."""
    spec = grid_tuner(2, tmp_path / "gate", 2, "corrupt")._experiment_spec()
    assert spec.grid is not None
    axis = next(a for a in spec.grid.axes if a.path == ["i"])
    axis.values = [msgspec.Raw(b"\x91\x00"), msgspec.Raw(b"\x91\xa1\xff")]  # 0, then bad
    spec.grid.chunk = 1
    exp_id = daemon.ask(p.Submit(experiment=spec), p.Accepted).experiment_id
    wait_until(lambda: finished(daemon, exp_id), "the grid ends at its unreadable point")
    assert [t.tag for t in trials_of(daemon, exp_id)] == ["0_i=0"]
    assert "grid plan unreadable" in daemon.log
    assert submit(daemon, grid_tuner(2, tmp_path / "gate", 2, "after")).trial_ids  # serves on


@pytest.mark.daemon_args("--num-cpus", "1")
def test_restore_after_the_daemon_lost_a_grid_goes_on_from_its_next_point(
    daemon: RunningDaemon,
    daemon_factory: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its journal gone: the trials it made are resumed, its points never made are made,
    from the plan kept beside the state file (which leaves the grid's values out)."""
    n, wait_from = READY + 30, 3
    gate = Gate(tmp_path / "gate")
    script = fit_in_a_script(daemon, tmp_path, n, gate, wait_from)
    wait_until(lambda: daemon.status().experiments, "the grid is submitted")
    path = Path(daemon.status().experiments[0].path)
    wait_until(
        lambda: (
            (state := load_state(path)) is not None
            and [t.status for t in state.trials[: wait_from + 1]]
            == ["TERMINATED"] * wait_from + ["RUNNING"]
        ),
        "the points before the gate end, in experiment_state.msgpack",
    )
    state = load_state(path)
    assert state is not None and state.spec.grid is not None
    assert state.spec.grid.values_file == ""  # load_state put the values back
    assert len(state.trials) < n
    script.kill()
    script.wait()
    [running] = wait_until(lambda: [r for r in daemon.status().running if r.pid], "its pid")
    trial = psutil.Process(running.pid)
    procs = [trial, *trial.parents()[:1]]  # the trial and the zygote it was forked from
    daemon.stop(signal.SIGKILL)
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert alive == []  # they died with it: none writes to the folder any more
    fresh = daemon_factory(*daemon.args, name="fresh")  # another journal: it never saw it
    use_daemon(fresh, monkeypatch)
    gate.open()
    grid = tune.Tuner.restore(str(path), echo).fit()
    assert grid.num_terminated == n and not grid.errors
    assert sorted(r.metrics["x"] for r in grid) == list(range(n))
