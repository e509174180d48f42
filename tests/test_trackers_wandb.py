"""``tuned_client.air.integrations.wandb`` with the real library, in offline mode.

Every W&B file goes to tmp_path (``WANDB_MODE=offline``, ``WANDB_DIR`` and
friends; nothing under HOME); a sweep runs in a script of its own (W&B's
service process ends with it), and what landed in each trial's ``wandb/``
folder is read back record by record. The configuration checks port Ray's
``test_integration_wandb.py`` (import swapped, without its mocked W&B).
"""

from __future__ import annotations

import glob
import json
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon

pytest.importorskip("wandb", reason="the wandb extra is not installed")
from tuned_client.air.integrations.wandb import WandbLoggerCallback
from wandb.proto import wandb_internal_pb2


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "WANDB_MODE": "offline", "WANDB_SILENT": "true",
        **{f"WANDB_{d}_DIR": str(tmp_path / f"wandb-{d.lower()}")
           for d in ("CACHE", "CONFIG", "DATA", "ARTIFACT")},
        "WANDB_DIR": str(tmp_path / "wandb-dir"),
    }  # fmt: skip
    for key in ("WANDB_API_KEY", "WANDB_PROJECT_NAME", "WANDB_GROUP_NAME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Path(env["WANDB_DIR"]).mkdir()
    return env


def records(path: str) -> Iterator[Any]:
    """The records of a ``.wandb`` file (a LevelDB-style log of protobuf ``Record``s)."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(chunk)
            chunk = b""
            yield rec


def _items(items: Any) -> dict[str, Any]:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def read_run(trial_dir: str) -> dict[str, Any]:
    [path] = glob.glob(f"{glob.escape(trial_dir)}/wandb/offline-run-*/run-*.wandb")
    out: dict[str, Any] = {"config": {}, "history": [], "exit": False}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(id=rec.run.run_id, name=rec.run.display_name, group=rec.run.run_group,
                       project=rec.run.project)  # fmt: skip
            out["config"].update(_items(rec.run.config.update))
        elif kind == "config":
            out["config"].update(_items(rec.config.update))
        elif kind == "history":
            out["history"].append(_items(rec.history.item))
        elif kind == "exit":
            out["exit"] = True
    return out


SWEEP = textwrap.dedent(
    """
    import sys
    from tuned_client import tune
    from tuned_client.air.integrations.wandb import WandbLoggerCallback, setup_wandb

    def steps(config):
        for i in range(3):
            tune.report({"loss": config["x"] * i, "nested": {"acc": 0.5}, "skip": 1})

    def inside(config):
        run = setup_wandb(config, project="inner")
        run.log({"inside": 7.0})
        run.finish()
        tune.report({"loss": 1.0})

    callback = WandbLoggerCallback(project="proj", excludes=["skip"])
    tune.Tuner(steps, param_space={"x": tune.grid_search([1, 2])},
               run_config=tune.RunConfig(verbose=0, callbacks=[callback])).fit()
    tune.Tuner(inside, param_space={"lr": 0.1}, run_config=tune.RunConfig(verbose=0)).fit()
    """
)


def test_a_sweep_logged_to_wandb_offline(
    daemon: RunningDaemon, offline: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    env = {**daemon.env(), **offline, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    del env["WANDB_DIR"]  # W&B's default, the working directory: the trial's folder, as in Ray
    env["TMPDIR"] = str(tmp_path)  # wandb's media and artifact staging dirs, left by trials
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=300)
    inside_dir, steps_dir = sorted(daemon.storage.iterdir())  # by name
    trials = sorted(p for p in steps_dir.iterdir() if p.is_dir())
    assert len(trials) == 2
    for trial in trials:
        run = read_run(str(trial))
        trial_id = run["config"]["trial_id"]
        assert run["id"] == trial_id and run["name"] == f"steps_{trial_id}"
        assert run["group"] == steps_dir.name and run["project"] == "proj"
        x = run["config"]["x"]
        assert run["config"]["trial_log_path"] == str(trial)
        assert {"hostname", "pid", "date", "experiment_tag"} <= set(run["config"])
        history = run["history"]
        assert [(h["_step"], h["loss"]) for h in history] == [(1, 0), (2, x), (3, 2 * x)]
        assert all(h["nested/acc"] == 0.5 for h in history)
        # Ray's exclusions: done, config (without log_config) and what `excludes` names
        assert not {"done", "skip", "config/x", "trial_id"} & {k for h in history for k in h}
        assert run["exit"]  # wandb.finish() ran before fit() returned
    # setup_wandb inside the trainable: the trial's id, name and experiment, its config
    [trial] = [p for p in inside_dir.iterdir() if p.is_dir()]
    run = read_run(str(trial))
    assert run["name"] == f"inside_{run['id']}" and trial.name.startswith(run["name"])
    assert run["group"] == inside_dir.name and run["config"]["lr"] == 0.1
    assert [h["inside"] for h in run["history"]] == [7.0]
    assert not list(Path(offline["WANDB_DIR"]).iterdir())  # each run went to its trial


def test_ray_wandb_logger_project_and_group(
    offline: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="project name"):
        WandbLoggerCallback().setup()
    monkeypatch.setenv("WANDB_PROJECT_NAME", "test_project_from_env_var")
    monkeypatch.setenv("WANDB_GROUP_NAME", "test_group_from_env_var")
    logger = WandbLoggerCallback()
    logger.setup()
    assert logger.project == "test_project_from_env_var"
    assert logger.group == "test_group_from_env_var"
    logger = WandbLoggerCallback(project="mine", group="ours")
    logger.setup()
    assert (logger.project, logger.group) == ("mine", "ours")


def test_ray_wandb_logger_api_key(
    offline: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")  # offline skips the key altogether, as Ray's
    monkeypatch.setenv("WANDB_API_KEY", "before")  # restored after the test
    key_file = tmp_path / "key"
    key_file.write_text("1234\n")
    with pytest.raises(ValueError, match="Both WandB"):
        WandbLoggerCallback(project="p", api_key_file=str(key_file), api_key="1234").setup()
    WandbLoggerCallback(project="p", api_key_file=str(key_file)).setup()
    import os

    assert os.environ["WANDB_API_KEY"] == "1234"
    WandbLoggerCallback(project="p", api_key="abcd").setup()
    assert os.environ["WANDB_API_KEY"] == "abcd"
