"""The fold the terminal views and the page share: best trial, ETA, metrics, curves."""

from __future__ import annotations

from tuned_client import protocol as p

from tuned.cli.status import wrapped
from tuned.cli.summary import Fold, best_line
from tuned.web.model import Series, WebModel


def events(metric: str = "loss", mode: str = "min") -> list[object]:
    out: list[object] = [
        p.ExperimentAccepted(
            seq=1, ts=100.0, experiment_id="e", name="n", path="/r", num_trials=3,
            metric=metric, mode=mode,
        )
    ]  # fmt: skip
    for i in range(3):
        out.append(
            p.TrialQueued(
                seq=2 + i, ts=100.0, experiment_id="e", trial_id=f"e_{i}", name=f"t{i}",
                config=p.pack_user({"lr": i / 10}),
            )
        )  # fmt: skip
    return out


def result(seq: int, trial: str, it: int, **metrics: float) -> p.TrialResult:
    row = {"training_iteration": it, "time_total_s": 1.0, **metrics}
    return p.TrialResult(
        seq=seq, ts=100.0 + seq, experiment_id="e", trial_id=trial, metrics=p.pack_user(row)
    )


def test_best_trial_follows_the_metric_and_mode_of_last_results() -> None:
    fold = Fold()
    for ev in events(mode="max"):
        fold.on_event(ev)
    fold.on_event(result(10, "e_0", 1, loss=0.5, acc=0.1))
    fold.on_event(result(11, "e_1", 1, loss=0.9, acc=0.2))
    exp = fold.experiments["e"]
    assert exp.best() is exp.trials["e_1"]
    fold.on_event(result(12, "e_1", 2, loss=0.1))  # Ray ranks by the last result
    assert exp.best() is exp.trials["e_0"]
    assert exp.metric_names() == ["loss", "acc"]
    assert best_line(exp) == "best e_0  loss=0.5 (max)  lr=0"
    exp.mode = ""
    assert exp.best() is None and best_line(exp) == ""


def test_eta_from_the_pace_of_finished_trials() -> None:
    fold = Fold()
    for ev in events():
        fold.on_event(ev)
    exp = fold.experiments["e"]
    assert exp.eta(now=130.0) is None  # nothing finished yet: no pace
    fold.on_event(
        p.TrialFinished(seq=20, ts=120.0, experiment_id="e", trial_id="e_0", status="TERMINATED")
    )
    assert exp.eta(now=130.0) == 60.0  # one of three in 30 s: two more take 60 s
    fold.on_event(p.ExperimentFinished(seq=30, ts=140.0, experiment_id="e", counts={}))
    assert exp.eta(now=150.0) == 0.0


def test_wrapped_tables_keep_every_column_within_the_width() -> None:
    headers = ["TRIAL", *(f"metric_{i}" for i in range(12))]
    rows = [["e_00001", *(f"{i}.12345" for i in range(12))]]
    lines = wrapped(headers, rows, width=80)
    assert max(map(len, lines)) <= 80
    assert all(h in "\n".join(lines) for h in headers)
    assert sum(line.startswith("TRIAL") for line in lines) == 2  # the id starts each block


def test_a_curve_restarts_where_a_retry_reports_again() -> None:
    s = Series()
    for it in (1, 2, 3):
        s.add({"training_iteration": it, "loss": 1.0 / it, "note": "text"})
    s.sent = 3
    s.add({"training_iteration": 2, "loss": 0.7})  # the retry resumed from iteration 1
    assert s.it == [1, 2] and s.values["loss"] == [1.0, 0.7]
    assert "note" not in s.values and s.points(s.sent) == {
        "from": 1,
        "it": [2],
        "m": {"loss": [0.7]},
    }


def test_deltas_carry_new_points_once() -> None:
    model = WebModel()
    for ev in events():
        model.on_event(ev)
    model.on_event(result(10, "e_0", 1, loss=0.5))
    first = model.take_deltas({"e"})
    [row] = [r for r in first["e"]["trials"] if r["id"] == "e_0"]
    assert len(first["e"]["trials"]) == 3  # every queued trial once
    assert row["series"] == {"from": 0, "it": [1], "m": {"loss": [0.5]}}
    assert first[""]["experiments"][0]["best"]["trial"] == "e_0"
    model.on_event(result(11, "e_0", 2, loss=0.25))
    [row] = model.take_deltas({"e"})["e"]["trials"]
    assert row["series"] == {"from": 1, "it": [2], "m": {"loss": [0.25]}}
    assert row["best"] == 0.25
    assert model.take_deltas({"e"}) == {"": {"kind": "delta", "experiments": [], "machine": []}}
