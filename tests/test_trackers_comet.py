"""``tuned_client.air.integrations.comet`` with the real library, offline.

A sweep in a script of its own logs through ``CometLoggerCallback(online=False,
offline_directory=...)``; each trial's experiment is read back from the
archive Comet leaves there (its ``messages.json``). Nothing under HOME:
``COMET_CONFIG`` points into tmp_path; comet_ml is never imported by pytest itself.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon

# Not imported here: comet_ml patches libraries in the process that imports it (an
# mlflow run in a later test would start a Comet experiment of its own in the cwd).
if importlib.util.find_spec("comet_ml") is None:
    pytest.skip("the comet extra is not installed", allow_module_level=True)

SWEEP = textwrap.dedent(
    """
    import sys
    from tuned_client import tune
    from tuned_client.air.integrations.comet import CometLoggerCallback

    def steps(config):
        for i in range(3):
            tune.report({"loss": config["x"] * i})

    callback = CometLoggerCallback(online=False, tags=["swept"], offline_directory=sys.argv[1],
                                   project_name="proj")
    tune.Tuner(steps, param_space={"x": tune.grid_search([1, 2])},
               run_config=tune.RunConfig(verbose=0, callbacks=[callback])).fit()
    """
)


def read_archive(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        experiment = json.loads(z.read("experiment.json"))
        messages = [json.loads(line) for line in z.read("messages.json").splitlines()]
    out: dict[str, Any] = {"tags": experiment["tags"], "project": experiment["project_name"],
                           "other": {}, "params": {}, "loss": [], "system": {}}  # fmt: skip
    for m in messages:
        kind, payload = m["type"], m["payload"]
        if kind == "log_other":
            out["other"][payload["key"]] = payload["value"]
        elif kind == "parameter_msg" and payload["param"]["source"] == "manual":
            out["params"][payload["param"]["paramName"]] = payload["param"]["paramValue"]
        elif kind == "metric_msg" and payload["metric"]["metricName"] == "loss":
            out["loss"].append((payload["metric"]["step"], payload["metric"]["metricValue"]))
        elif kind == "system_info":
            out["system"][payload["system_info"]["key"]] = payload["system_info"]["value"]
    return out


def test_a_sweep_logged_to_comet_offline(daemon: RunningDaemon, tmp_path: Path) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    out = tmp_path / "comet"
    env = {**daemon.env(), "COMET_CONFIG": str(tmp_path / "comet.config"),
           "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}  # fmt: skip
    subprocess.run(
        [sys.executable, str(script), str(out)], env=env, check=True, timeout=300,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    runs = sorted((read_archive(p) for p in out.glob("*.zip")), key=lambda r: r["params"]["x"])
    assert [r["params"]["x"] for r in runs] == [1, 2]
    for run in runs:
        x = run["params"]["x"]
        assert run["tags"] == ["swept"] and run["project"] == "proj"
        assert run["other"]["Name"] == f"steps_{run['other']['trial_id']}"
        assert run["other"]["Created from"] == "Ray"
        assert run["loss"] == [(1, 0), (2, x), (3, 2 * x)]
        assert {"hostname", "pid"} <= set(run["system"])  # system info, not metrics
