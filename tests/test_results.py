"""What fit() keeps per trial: compact finished trials, and Results read from them.

A finished trial's view keeps its last result as the packed bytes the daemon
sent, and its Result decodes them when first read; these tests hold every
reader (callbacks, ResultGrid, the status table's source) to the values the
trial reported, non-JSON values included, and bound what a finished trial costs.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune.progress import TrialView
from tuned_client.tune.result import Result
from tuned_client.tune.results_builder import build_results


def running_view(trial_id: str, path: str) -> TrialView:
    view = TrialView(trial_id=trial_id, name=f"t_{trial_id}", tag="0", config={"i": 1})
    view.status, view.path, view.resources = "RUNNING", path, {"cpu": 1.0}
    return view


def test_a_finished_view_keeps_only_the_packed_result_and_reads_it_exactly() -> None:
    view = running_view("a", "/results/exp/t_a_0")
    view.set_packed_result(bytes(p.pack_user({"score": 3, "other": ..., "done": False})))
    live = view.last_result
    assert live is view.last_result and live == {"score": 3, "other": ..., "done": False}
    view.finish("TERMINATED", "", "")
    assert view.packed_result() is not None and view.resources == {}
    first, second = view.last_result, view.last_result
    assert first == second == {"score": 3, "other": ..., "done": True}
    assert first is not second  # decoded on each read, kept by nobody
    assert first is not None and first["other"] is Ellipsis  # not the string JSON would give


def test_trials_of_one_experiment_share_their_folder_string() -> None:
    a, b = running_view("a", "/results/exp/t_a_0"), running_view("b", "/results/exp/t_b_1")
    assert (a.path, b.path) == ("/results/exp/t_a_0", "/results/exp/t_b_1")
    assert a._parent is b._parent
    assert TrialView(trial_id="c", name="c", tag="", config={}).path == ""


def test_an_errored_view_without_a_result_keeps_none() -> None:
    view = running_view("a", "/r/e/t")
    view.finish("ERROR", "ValueError: x", "Traceback ...")
    assert view.last_result is None and view.packed_result() is None
    assert (view.status, view.error) == ("ERROR", "ValueError: x")


def test_a_result_decodes_its_metrics_once_when_read(tmp_path: Path) -> None:
    packed = bytes(p.pack_user({"loss": 0.5, "other": ..., "done": False}))
    result = Result(None, {"x": 1}, str(tmp_path), status="TERMINATED", _packed_metrics=packed)
    peeked = result.peek_metrics()
    assert peeked == {"loss": 0.5, "other": ..., "done": True}
    assert result.peek_metrics() is not peeked  # a pass over every result keeps nothing
    assert result.metrics is result.metrics and result.metrics == peeked
    result.metrics["mine"] = 1  # a user's change stays, as on a plain attribute
    assert result.metrics["mine"] == 1
    shown = "{'loss': 0.5, 'other': Ellipsis, 'done': True, 'mine': 1}"
    assert repr(result).startswith(f"Result(metrics={shown}, error=None")


def test_best_checkpoints_are_listed_when_first_read(tmp_path: Path) -> None:
    result = Result({"score": 1}, {}, str(tmp_path), status="TERMINATED")
    (tmp_path / "checkpoint_000001").mkdir()  # after the Result was made: read lazily
    row = {"score": 7, "checkpoint_dir_name": "checkpoint_000001"}
    (tmp_path / "result.json").write_text(json.dumps(row) + "\n")
    [(checkpoint, metrics)] = result.best_checkpoints
    assert checkpoint.path.endswith("checkpoint_000001") and metrics["score"] == 7


def scored(config: dict[str, Any]) -> None:
    for step in range(2):
        tune.report({"score": config["i"] * 2 + step, "other": ...})


class FinishedTrialsCheck(tune.Callback):
    """On each completion: every other finished trial is compact and reads back exactly."""

    def __init__(self) -> None:
        self.checked = 0
        self.problems: list[str] = []

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for t in trials:
            if t.status != "TERMINATED":
                continue
            last = t.last_result
            if t.packed_result() is None or last is None:
                self.problems.append(f"{t} holds its result decoded or not at all")
            elif last["score"] != t.config["i"] * 2 + 1 or last["done"] is not True:
                self.problems.append(f"{t} reads back {last}")
            elif last["other"] is not Ellipsis:
                self.problems.append(f"{t} lost its non-JSON value: {last['other']!r}")
            self.checked += 1


def test_callbacks_and_the_result_grid_read_what_each_trial_reported(
    daemon: RunningDaemon,
) -> None:
    check = FinishedTrialsCheck()
    results = tune.Tuner(
        scored,
        param_space={"i": tune.grid_search(list(range(8)))},
        run_config=tune.RunConfig(verbose=0, callbacks=[check]),
    ).fit()
    assert check.problems == [] and check.checked >= 8
    assert len(results) == 8
    assert [r.config["i"] for r in results] == list(range(8))  # iteration in trial order
    third = results[3]
    assert third.metrics["score"] == 7 and third.metrics["done"] is True
    assert third.metrics["other"] is Ellipsis
    assert Path(third.path).parent == Path(results.experiment_path)
    assert results.get_best_result("score", "max").config == {"i": 7}
    assert results.get_best_result("score", "min", scope="all").config == {"i": 0}
    assert results.get_best_result("score", "max", scope="avg").config == {"i": 7}
    frame = results.get_dataframe()
    assert len(frame) == 8 and list(frame["config/i"]) == list(range(8))
    assert list(frame["logdir"]) == [r.path for r in results]
    assert list(third.metrics_dataframe["score"]) == [6, 7]


def trivial(config: dict[str, Any]) -> dict[str, Any]:
    return {"x": config["i"]}


class TracedAt(tune.Callback):
    """Python's traced memory after the ``marks``-th completions."""

    def __init__(self, marks: tuple[int, int]) -> None:
        self.marks = marks
        self.done = 0
        self.traced: list[int] = []

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.done += 1
        if self.done in self.marks:
            del trials
            gc.collect()
            self.traced.append(tracemalloc.get_traced_memory()[0])


@pytest.mark.slow
def test_a_finished_trial_costs_fit_a_few_hundred_bytes(daemon: RunningDaemon) -> None:
    # Before finished trials were kept compact, each cost about 1,250 bytes here.
    first, last = 100, 400
    sampler = TracedAt((first, last))
    tracemalloc.start()
    try:
        tune.Tuner(
            tune.with_resources(trivial, {"cpu": 0.25}),
            param_space={"i": tune.grid_search(list(range(last)))},
            run_config=tune.RunConfig(verbose=0, callbacks=[sampler]),
        ).fit()
    finally:
        tracemalloc.stop()
    per_trial = (sampler.traced[1] - sampler.traced[0]) / (last - first)
    assert per_trial < 600, f"{per_trial:.0f} bytes per finished trial"


def finished_view(index: int) -> TrialView:
    view = running_view(f"e_{index:05d}", f"/results/exp/t_e_{index:05d}")
    view.set_packed_result(bytes(p.pack_user({"x": index})))
    view.finish("TERMINATED", "", "")
    return view


class CountedId(str):
    """A trial id that counts its comparisons: cost in steps, not seconds."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        CountedId.compared += 1
        return str.__eq__(self, other) is True

    __hash__ = str.__hash__


def test_the_grid_lists_trials_in_submission_order_then_added_ones_in_linear_steps() -> None:
    n = 2000
    views = [finished_view(i) for i in range(n)]
    # Equal ids but other objects than the keys: every lookup compares (no identity shortcut).
    trials = {CountedId(v.trial_id): v for v in reversed(views)}  # events come in any order
    submitted = [CountedId(v.trial_id) for v in views[:-1]]  # the last one: added later
    accepted = p.Accepted(experiment_id="e", path="/results/exp", trial_ids=submitted)
    CountedId.compared = 0
    grid = build_results(accepted, trials, "x", "max")
    assert [r.trial_id for r in grid] == [v.trial_id for v in views]
    assert grid.get_best_result().metrics["x"] == n - 1
    # A hashed lookup or two per trial; looking each up in the list (as it once did,
    # 10 s for 20,000 trials) compares with half the list on average.
    assert CountedId.compared <= 3 * n, f"{CountedId.compared} comparisons for {n} trials"
