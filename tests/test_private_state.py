"""Secrets never reach the results folder; everything in the state folder is owner-only.

The journal keeps each experiment's environment (API tokens and all) for
recovery: it lives in the private state folder, 0700 from the first mkdir,
every file in it 0600. The results folder, which users share and publish,
holds no environment at all.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from conftest import socket_path as new_socket_path
from tuned_client import protocol as p

SECRET = "hf_do_not_leak_4f9a2c"

SCRIPT = """
from tuned_client import tune
tune.Tuner(
    lambda config: {"x": config["x"]},
    param_space={"x": tune.grid_search([1, 2, 3])},
    run_config=tune.RunConfig(name="private", verbose=0),
).fit()
"""


@pytest.fixture
def socket_path() -> Path:
    return new_socket_path("private")


def tuned(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuned", *args], env=env, capture_output=True, text=True, timeout=60
    )


def loose_modes(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that group or others may use."""
    loose = []
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            loose.append(f"{path.relative_to(root)} {stat.S_IMODE(st.st_mode):04o}")
    return loose


def test_state_is_owner_only_and_no_secret_reaches_the_results(
    tmp_path: Path, socket_path: Path
) -> None:
    state = tmp_path / "fresh" / "state"  # neither exists: `tuned start` makes both
    results = tmp_path / "results"
    env = {
        **os.environ,
        "TUNED_SOCKET": str(socket_path),
        "TUNED_STATE_DIR": str(state),
        "TUNED_STORAGE_PATH": str(results),
        "HF_TOKEN": SECRET,
    }
    started = tuned("start", "--num-cpus", "2", env=env)  # in the background, as users do
    assert started.returncode == 0, started.stderr
    try:
        script = tmp_path / "fit.py"
        script.write_text(SCRIPT)
        ran = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stderr
    finally:
        assert tuned("stop", env=env).returncode == 0
    assert loose_modes(state) == []
    assert {"journal.bin", "daemon.out", "tuned.log"} <= {p.name for p in state.iterdir()}
    assert SECRET.encode() in (state / "journal.bin").read_bytes()  # kept privately, for recovery
    for path in results.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    state_file = results / "private" / p.EXPERIMENT_STATE_FILE
    saved = msgspec.msgpack.decode(state_file.read_bytes(), type=p.ExperimentState)
    assert saved.spec.env == {}


def test_a_state_folder_an_older_version_left_open_is_closed(
    tmp_path: Path, socket_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    for name in ("tuned.pid", "zygotes.log", "daemon.out"):
        (state / name).write_text("from an older tuned\n")
        (state / name).chmod(0o644)
    (state / "archive").mkdir(mode=0o755)
    (state / "archive").chmod(0o755)
    env = {**os.environ, "TUNED_SOCKET": str(socket_path), "TUNED_STATE_DIR": str(state)}
    assert tuned("start", "--num-cpus", "1", env=env).returncode == 0
    try:
        assert loose_modes(state) == []
    finally:
        assert tuned("stop", env=env).returncode == 0
