"""A full disk: the daemon refuses new work, finishes what it has, and loses nothing it wrote.

The disk filling up is real here: the daemon runs with a small ``RLIMIT_FSIZE``
(CPython ignores SIGXFSZ, so a write past the limit fails with EFBIG, or is cut
short, exactly where ENOSPC would strike). Every file it writes is limited: the
journal, its log, result files and state files of experiments.
"""

from __future__ import annotations

import json
import resource
import signal
import threading
from pathlib import Path

import pytest
from conftest import RunningDaemon, restart_daemon, start_daemon, use_daemon
from gates import Gate, pass_gate, wait_until
from tuned_client import tune

from tuned.store.journal import Journal

LIMIT = 256 * 1024
PAD = "x" * 60_000  # each padded submit puts ~120 KB into the journal


def start_limited(base: Path, fsize: int, args: list[str], name: str = "full") -> RunningDaemon:
    """``tuned start`` (logging to its log file) with every file it writes capped at ``fsize``."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return start_daemon(base, args, name, foreground=False, preexec=limit)


def waits_for_release(config: dict) -> None:
    Path(config["dir"], f"started-{config['i']}").touch()
    pass_gate(config["release"])  # the test decides when it may go on
    for step in range(1, 4):
        tune.report({"step": step})


def trivial(config: dict) -> dict:
    return {"ok": 1}


def test_a_full_disk_refuses_new_work_and_keeps_the_running_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = start_limited(tmp_path, LIMIT, ["--num-cpus", "4", "--num-gpus", "0"])
    try:
        use_daemon(d, monkeypatch)
        work = tmp_path / "work"
        work.mkdir()
        release = Gate(tmp_path / "release")
        running: list[tune.ResultGrid] = []
        first = threading.Thread(
            target=lambda: running.append(
                tune.Tuner(
                    waits_for_release,
                    param_space={
                        "dir": str(work),
                        "release": str(release),
                        "i": tune.grid_search([0, 1]),
                    },
                    run_config=tune.RunConfig(name="running", verbose=0),
                ).fit()
            )
        )
        first.start()
        started = [work / "started-0", work / "started-1"]
        wait_until(lambda: all(f.exists() for f in started), "both trials to start")

        refusal = None
        for i in range(8):  # fill the journal with experiments until the disk says no
            try:
                tune.Tuner(
                    trivial,
                    param_space={"pad": PAD},
                    run_config=tune.RunConfig(name=f"pad{i}", verbose=0),
                ).fit()
            except tune.TuneError as exc:
                refusal = str(exc)
                break
        assert refusal is not None, "the journal never filled up"
        assert f"cannot write its journal in {d.state_dir}" in refusal
        assert "takes no new work" in refusal
        accepted_pads = i
        with pytest.raises(tune.TuneError, match="takes no new work"):  # and it stays so
            tune.Tuner(trivial, run_config=tune.RunConfig(name="later", verbose=0)).fit()

        release.open()  # the experiment that was running goes on to its end
        first.join(timeout=120)
        assert not first.is_alive()
        results = running[0]
        assert not results.errors
        assert sorted(r.metrics["step"] for r in results) == [3, 3]
        d.status()  # it serves on
        assert d.stop(signal.SIGTERM) == 0  # it never crashed, and stops cleanly
    finally:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)

    journal = d.state_dir / "journal.bin"
    size = journal.stat().st_size
    assert 0 < size <= LIMIT
    records = list(Journal.replay(journal))
    assert journal.stat().st_size == size  # no torn record to cut: nothing was corrupted
    names = [r.spec.name for r in records if hasattr(r, "spec")]
    assert names == ["running", *[f"pad{n}" for n in range(accepted_pads)]]

    again = restart_daemon(d)  # room again: it replays the journal and takes work
    try:
        assert {e.name for e in again.status().experiments} >= {"running", "pad0"}
        results = tune.Tuner(trivial, run_config=tune.RunConfig(name="after", verbose=0)).fit()
        assert not results.errors
    finally:
        again.stop()


def big_rows(config: dict) -> None:
    for step in range(1, 21):
        tune.report({"step": step, "blob": "y" * 40_000})


def test_a_trial_whose_results_no_longer_fit_fails_alone_with_whole_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = start_limited(tmp_path, LIMIT, ["--num-cpus", "2", "--num-gpus", "0"])
    try:
        use_daemon(d, monkeypatch)
        results = tune.Tuner(big_rows, run_config=tune.RunConfig(name="big", verbose=0)).fit()
        assert results.num_errors == 1
        assert "cannot write the trial's results in" in str(results.errors[0])
        lines = (Path(results[0].path) / "result.json").read_bytes().splitlines(keepends=True)
        assert 0 < len(lines) < 20
        assert all(line.endswith(b"\n") for line in lines)  # no half row was left behind
        steps = [json.loads(line)["step"] for line in lines]
        assert steps == list(range(1, len(lines) + 1))
        d.status()  # the daemon serves on
        assert d.stop(signal.SIGTERM) == 0
    finally:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
