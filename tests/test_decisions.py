"""A trial does not run past a result until its scheduler, searcher and stoppers decided.

Ray Tune's rule (issue 17, item 2), through a real daemon: with instant
iterations, ASHA's stops land exactly on its rungs; a client that dies while
its trials wait on it leaves nothing hanging (its trial stops at the result it
waited on, once the daemon has given the client its grace period); a FIFO
sweep is not slowed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.tune.fit_settings import FitSettings
from tuned_client.tune.schedulers import ASHAScheduler, FIFOScheduler
from tuned_client.tune.spec import needs_decisions


def instant(config: dict[str, Any]) -> None:
    for i in range(1, 31):
        tune.report({"loss": config["x"] / i})


@pytest.mark.daemon_args("--num-cpus", "4")
def test_asha_stops_land_on_its_rungs_with_instant_iterations(daemon: RunningDaemon) -> None:
    values = [float(v) for v in (7, 3, 11, 1, 9, 5, 12, 2, 8, 4, 10, 6)]
    grid = tune.Tuner(
        instant,
        param_space={"x": tune.grid_search(values)},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", scheduler=ASHAScheduler(max_t=30, grace_period=2)
        ),
        run_config=tune.RunConfig(verbose=0),
    ).fit()
    stopped_at = sorted(r.metrics["training_iteration"] for r in grid)
    # Rungs at 2 and 8 (reduction factor 4), the end at 30: no trial ran past a decision.
    assert set(stopped_at) <= {2, 8, 30}, stopped_at
    assert stopped_at.count(2) >= len(values) // 2, stopped_at
    assert grid.get_best_result().config == {"x": 1.0}


def test_only_what_decides_per_result_makes_trials_wait() -> None:
    def fit(**tc: Any) -> FitSettings:
        return FitSettings(instant, {}, tune.TuneConfig(**tc), tune.RunConfig())

    assert not needs_decisions(fit())
    assert not needs_decisions(fit(scheduler=FIFOScheduler()))
    assert needs_decisions(fit(scheduler=ASHAScheduler(metric="loss", mode="min")))
    stopper = FitSettings(instant, {}, tune.TuneConfig(), tune.RunConfig(stop=lambda t, r: False))
    assert needs_decisions(stopper)
    plain = FitSettings(instant, {}, tune.TuneConfig(), tune.RunConfig(stop={"loss": 0.1}))
    assert not needs_decisions(plain)  # a dict rule is checked inside the trial


DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tuned_client import tune

    def trainable(config):
        for i in range(1, 41):
            if i == 3:
                Path(config["ready"]).touch()  # the driver is killed once this exists
            tune.report({"loss": 1.0 / i})

    stop = lambda trial_id, result: (Path(sys.argv[1]).touch(), False)[1]
    tune.Tuner(
        trainable,
        param_space={"ready": sys.argv[1] + ".trial"},
        run_config=tune.RunConfig(name="orphan", stop=stop, verbose=0),
    ).fit()
    """
)


@pytest.mark.daemon_args("--num-cpus", "4", "--driver-grace", "0.5")
def test_trials_waiting_on_a_dead_client_stop_there(daemon: RunningDaemon, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    flag = tmp_path / "decided"
    proc = subprocess.Popen([sys.executable, str(script), str(flag)], env=daemon.env())
    ready = Path(str(flag) + ".trial")
    try:
        with daemon.connect() as conn:
            conn.send(p.Subscribe(experiment_id="", since=-1))
            while not (flag.exists() and ready.exists()):
                msg = conn.recv()  # events pace the wait: the trial reports as it goes
                assert not isinstance(msg, p.Error), msg
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        with daemon.connect() as conn:
            conn.send(p.Subscribe(experiment_id="", since=0))
            while True:
                msg = conn.recv()
                if isinstance(msg, p.TrialFinished):
                    break
        # Unfinished (Tuner.restore resumes it): it ran no further than the result it
        # waited on when its client died, or the next one.
        assert (msg.status, msg.error) == ("ERROR", p.INTERRUPTED)
        rows = next((daemon.storage / "orphan").glob("*/result.json")).read_text()
        assert 3 <= len(rows.splitlines()) < 40
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
