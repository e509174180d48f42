"""Issue 17's remaining console and option checks, from Ray Tune's documented behaviour.

- ``RunConfig(verbose=...)``: 1 shows the status block and each trial's start and
  end, not its intermediate results; 2 adds each result ("finished iteration").
- ``JupyterNotebookReporter``: the "== Status ==" block through IPython's
  ``display``, the cell cleared first with ``overwrite=True`` (Ray's default).
- A nested config shows as Ray shows it: flat keys (``model/lr``) in the trial
  table's columns and in each trial's config and result tables, and the best
  trial's ``params=`` names the searched keys only.
- ``SyncConfig(upload_dir=...)`` is refused at ``fit()`` (one machine: nothing to
  sync), never ignored; a ``SyncConfig`` without one, and ``reuse_actors``, are
  accepted and change no answer.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import tune
from tuned_client.tune import JupyterNotebookReporter, TuneError


def two_steps(config: dict[str, Any]) -> None:
    for i in range(2):
        tune.report({"loss": float(config["x"] + i)})


def fit(**run_config: Any) -> Any:
    return tune.Tuner(
        two_steps,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(**run_config),
    ).fit()


def test_verbose_1_shows_trials_but_not_their_results_2_shows_them(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fit(verbose=1)
    one = capsys.readouterr().out
    assert "Trial status: 2 TERMINATED" in one
    assert "started with configuration:" in one and "completed after 2 iterations" in one
    assert "finished iteration" not in one
    fit(verbose=2)
    two = capsys.readouterr().out
    assert "finished iteration 1 at " in two and "finished iteration 2 at " in two


def nested(config: dict[str, Any]) -> None:
    tune.report({"loss": config["model"]["lr"], "extra": {"depth": config["model"]["depth"]}})


def test_a_nested_config_shows_flat_keys_as_ray_shows_them(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    tune.Tuner(
        nested,
        param_space={"model": {"lr": tune.grid_search([0.5, 0.25]), "depth": 3}, "seed": 1},
        tune_config=tune.TuneConfig(metric="loss", mode="min"),
        run_config=tune.RunConfig(verbose=2),
    ).fit()
    out = capsys.readouterr().out
    assert "with loss=0.25 and params={'model/lr': 0.25}" in out  # the searched keys only
    header = next(line for line in out.splitlines() if "Trial name" in line)
    assert "model/lr" in header.split()  # the varying key, flat
    assert "{'lr'" not in out and "{'depth'" not in out  # no nested dict printed whole
    for row in ("model/depth", "model/lr", "seed", "extra/depth"):
        assert any(line.strip("│ ").startswith(row) for line in out.splitlines()), row


def test_jupyter_notebook_reporter_displays_the_status_block(
    daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    display = pytest.importorskip(
        "IPython.display", reason="JupyterNotebookReporter draws through IPython"
    )
    shown: list[str] = []
    cleared: list[bool] = []
    monkeypatch.setattr(display, "display", lambda obj, raw=False: shown.append(obj["text/plain"]))
    monkeypatch.setattr(display, "clear_output", lambda wait=False: cleared.append(wait))
    reporter = JupyterNotebookReporter(metric_columns=["loss"], parameter_columns=["x"])
    fit(progress_reporter=reporter)
    assert shown and cleared, "nothing reached the notebook"
    assert "== Status ==" in shown[-1] and "Using FIFO scheduling algorithm." in shown[-1]
    assert "loss" in shown[-1] and "TERMINATED" in shown[-1]


def test_sync_config_with_an_upload_dir_is_refused_not_ignored(daemon: RunningDaemon) -> None:
    with pytest.raises(TuneError, match=r"SyncConfig\(upload_dir=...\) is not supported"):
        fit(sync_config=SimpleNamespace(upload_dir="s3://bucket/experiments"), verbose=0)


def test_sync_config_without_upload_dir_and_reuse_actors_change_no_answer(
    daemon: RunningDaemon,
) -> None:
    plain = fit(verbose=0)
    other = tune.Tuner(
        two_steps,
        param_space={"x": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(sync_config=SimpleNamespace(upload_dir=None), verbose=0),
    ).fit()
    assert [r.metrics["loss"] for r in other] == [r.metrics["loss"] for r in plain] == [2.0, 3.0]
    assert other.get_best_result().config == {"x": 1}
