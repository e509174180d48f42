"""The scheduler's rules as a user meets them, against a real daemon.

Trials record when their code started and ended; the assertions are about order
(who started before whom), never about how long anything took.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune import TuneConfig
from tuned_client.tune.schedulers import ASHAScheduler


def spanned(config: dict[str, Any]) -> None:
    """Sleeps $SPAN_SECONDS and records its span and devices in $SPANS."""
    start = time.time()
    time.sleep(float(os.environ["SPAN_SECONDS"]))
    record = {"start": start, "end": time.time(), "config": config}
    record["cuda"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    (Path(os.environ["SPANS"]) / f"{os.getpid()}-{start}.json").write_text(json.dumps(record))


def reporting(config: dict[str, Any]) -> None:
    tune.report({"loss": config["i"], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")})


@pytest.fixture
def spans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spans"
    folder.mkdir()
    monkeypatch.setenv("SPANS", str(folder))
    return folder


def read_spans(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in folder.glob("*.json")]


def fit(trainable: Any, **kwargs: Any) -> tune.ResultGrid:
    results = tune.Tuner(trainable, run_config=tune.RunConfig(verbose=0), **kwargs).fit()
    assert results.num_errors == 0, results.errors
    return results


@pytest.mark.daemon_args("--num-cpus", "4", "--num-gpus", "2")
def test_trials_of_a_steered_experiment_ask_for_their_own_resources(
    daemon: RunningDaemon,
) -> None:
    """A resources callable is asked per trial under ASHA too, as without a scheduler."""
    asks = lambda spec: {"gpu": 1} if spec.config.i % 2 else {"cpu": 1}  # noqa: E731
    results = fit(
        tune.with_resources(reporting, asks),
        param_space={"i": tune.grid_search(list(range(6)))},
        tune_config=TuneConfig(scheduler=ASHAScheduler(metric="loss", mode="min", max_t=1)),
    )
    cuda = {r.config["i"]: r.metrics["cuda"] for r in results}
    assert all(cuda[i] in ("0", "1") for i in (1, 3, 5)), cuda
    assert all(cuda[i] == "" for i in (0, 2, 4)), cuda


@pytest.mark.daemon_args("--num-cpus", "2")
def test_a_second_experiment_does_not_wait_for_the_whole_first_one(
    daemon: RunningDaemon, spans: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPAN_SECONDS", "0.3")
    watcher = daemon.connect()
    watcher.send(p.Subscribe())
    first = threading.Thread(
        target=fit,
        args=(spanned,),
        kwargs={"param_space": {"who": "first"}, "tune_config": TuneConfig(num_samples=8)},
    )
    first.start()
    while not isinstance(watcher.recv(), p.TrialStarted):  # the first experiment runs
        pass
    fit(spanned, param_space={"who": "second"}, tune_config=TuneConfig(num_samples=2))
    first.join(timeout=120)
    watcher.close()
    records = read_spans(spans)
    starts = {
        who: [r["start"] for r in records if r["config"]["who"] == who]
        for who in ("first", "second")
    }
    assert len(starts["first"]) == 8 and len(starts["second"]) == 2
    # Fair share: the second experiment's trials start as soon as the first's free a
    # CPU, ahead of the first experiment's queue, not once that queue runs dry.
    assert max(starts["second"]) < max(starts["first"])
