"""A trial that floods stdout does not slow or block the daemon, and loses no byte.

A trial's stdout and stderr are files it writes itself: the daemon never reads
them on its event loop. While one trial writes tens of megabytes a second, the
daemon answers a status request and runs another experiment to the end; then
the flood's file holds exactly what the trial wrote.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, next_event
from tuned_client import protocol as p
from tuned_client import tune
from tuned_client.connection import Connection

CHUNK = 1 << 20
CAP = 512 * CHUNK  # the flood ends on its own after this, whatever happens to the test


def flood(config: dict) -> dict:
    stop = config["stop"]
    chunk = b"x" * CHUNK
    written = 0
    while written < CAP and not os.path.exists(stop):
        view = memoryview(chunk)
        while view:
            view = view[os.write(1, view) :]
        written += CHUNK
        if written == 4 * CHUNK:
            tune.report({"flooding": written})
        time.sleep(0.02)  # about 50 MB/s: megabytes a second without filling the disk
    return {"written": written}


def trivial(config: dict) -> dict:
    return {"x": config["x"]}


@pytest.mark.daemon_args("--num-cpus", "2", "--num-gpus", "0")
def test_a_trial_flooding_stdout_blocks_nothing_and_loses_nothing(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    outcome: dict[str, Any] = {}

    def run_flood() -> None:
        outcome["grid"] = tune.Tuner(
            flood,
            param_space={"stop": str(stop)},
            run_config=tune.RunConfig(name="flood", verbose=0),
        ).fit()

    with daemon.connect() as watch:
        watch.send(p.Subscribe())
        flooder = threading.Thread(target=run_flood, daemon=True)
        flooder.start()
        try:
            trial_id = wait_for_flooding(watch)

            # Answered while the flood goes on (a daemon reading the flood on its loop
            # would answer late, and run the other experiment only after the flood).
            assert [r.trial_id for r in daemon.status().running] == [trial_id]

            other = tune.Tuner(
                trivial,
                param_space={"x": tune.grid_search([1, 2, 3])},
                run_config=tune.RunConfig(name="beside", verbose=0),
            ).fit()
            assert not other.errors
            assert sorted(r.metrics["x"] for r in other) == [1, 2, 3]

            reply = daemon.ask(p.GetTrial(trial_id=trial_id), p.TrialReply)
            assert reply.status == "RUNNING", "the flood ended before the other experiment"
        finally:
            stop.touch()
            flooder.join(timeout=120)
    grid = outcome["grid"]
    assert not grid.errors
    written = grid[0].metrics["written"]
    assert written > 4 * CHUNK
    assert (Path(grid[0].path) / "stdout").stat().st_size == written


def wait_for_flooding(conn: Connection) -> str:
    """The flood trial's id, once it has reported that it is flooding."""

    def flooding(event: p.TrialResult) -> bool:
        return bool(event.metrics) and "flooding" in p.unpack_user(event.metrics)

    return next_event(conn, p.TrialResult, flooding).trial_id
