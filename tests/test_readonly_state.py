"""A daemon whose state directory is read-only still starts, shows what it has, takes nothing new.

Its journal cannot be written, so accepting work would lose it at the next
crash: the daemon refuses submissions with an error naming the directory (as
on a full disk), and serves status, ``ls`` and the event history it replayed.
As root ``chmod`` does not stop writes, so the test makes the directory a
read-only bind mount; without root it removes the write bits instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, tuned_ok, use_daemon
from tuned_client import tune


def trivial(config: dict) -> dict:
    return {"x": config["x"]}


def run_sweep(name: str) -> tune.ResultGrid:
    return tune.Tuner(
        trivial,
        param_space={"x": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(name=name, verbose=0),
    ).fit()


def make_read_only(path: Path) -> Iterator[None]:
    if os.getuid() != 0:
        os.chmod(path / "journal.bin", 0o400)
        os.chmod(path, 0o500)
        try:
            yield
        finally:
            os.chmod(path, 0o700)
        return
    if shutil.which("mount") is None:
        pytest.skip("as root only a read-only mount stops writes, and `mount` is not installed")
    bind = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"as root only a read-only mount stops writes, and mount failed: {bind.stderr}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def start_on(d: RunningDaemon, log: Path) -> subprocess.Popen[bytes]:
    """Start a daemon on ``d``'s socket and state dir, logging outside it; wait until ready."""
    read_fd, write_fd = os.pipe()
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuned", "start", "--foreground",
             "--socket", str(d.socket), "--state-dir", str(d.state_dir),
             "--ready-fd", str(write_fd), *d.args],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(write_fd,),
        )  # fmt: skip
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        ok = ready.read(1) == b"1"
    if not ok:
        proc.wait(timeout=10)
        pytest.fail(f"the daemon did not start on a read-only state dir:\n{log.read_text()}")
    return proc


def test_a_read_only_state_dir_serves_what_it_has_and_refuses_new_work(
    daemon_factory: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    d: RunningDaemon = daemon_factory("--num-cpus", "2", "--num-gpus", "0")  # type: ignore[operator]
    use_daemon(d, monkeypatch)
    assert not run_sweep("before").errors
    assert d.stop() == 0
    (d.state_dir / "tuned.pid").unlink(missing_ok=True)

    readonly = make_read_only(d.state_dir)
    next(readonly)
    proc = None
    try:
        proc = start_on(d, tmp_path / "readonly.stderr")
        assert d.status().experiments  # it serves what it has
        ls = tuned_ok(d, "ls", "--json")
        [exp] = [e for e in json.loads(ls) if e["name"] == "before"]
        tail = tuned_ok(d, "tail", exp["experiment_id"], "--json", "--since", "0")
        kinds = [json.loads(line)["kind"] for line in tail.splitlines()]
        assert kinds.count("trial_finished") == 2 and kinds[-1] == "experiment_finished", kinds

        with pytest.raises(Exception) as refused:
            run_sweep("after")
        message = str(refused.value)
        assert f"cannot write its journal in {d.state_dir}" in message
        assert "takes no new work" in message
        assert not (d.storage / "after").exists() or not any((d.storage / "after").iterdir())
        assert proc.poll() is None  # refusing is not dying
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        next(readonly, None)
