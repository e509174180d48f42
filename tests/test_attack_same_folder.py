"""Two live experiments never share a folder, whatever path names it, whichever daemon.

Found by attack: with experiment A ("same") running in ``results/same``, an
experiment B with the same name and ``storage_path`` a link to ``results`` was
accepted (the daemon compared path strings), ran beside A in the same folder,
and its ``experiment_state.msgpack`` replaced A's: ``Tuner.restore`` of A's
folder then resumed B, with B's code. A second daemon (another state folder)
with the same storage path and name did the same. The folder itself is locked
while an experiment in it is live (``tuned.folderlock``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, use_daemon
from gates import Gate, pass_gate, wait_until
from tuned_client import tune
from tuned_client.tune.result import TuneError


def gated(config: dict) -> dict:
    pass_gate(config["gate"])
    return {"who": config["who"]}


def tuner(storage: Path, who: str, gate: Gate) -> tune.Tuner:
    return tune.Tuner(
        gated,
        param_space={"who": who, "gate": str(gate)},
        run_config=tune.RunConfig(name="same", storage_path=str(storage), verbose=0),
    )


class Running:
    """Experiment A, fit() in a thread, its trial held until ``release``."""

    def __init__(self, storage: Path, gate: Gate) -> None:
        self.gate = gate
        self.outcome: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._fit, args=(storage,), daemon=True)
        self.thread.start()

    def _fit(self, storage: Path) -> None:
        self.outcome["grid"] = tuner(storage, "A", self.gate).fit()

    def release(self) -> list[str]:
        self.gate.open()
        self.thread.join(timeout=120)
        return [r.metrics["who"] for r in self.outcome["grid"]]


def wait_accepted(folder: Path) -> None:
    """Until A's trainable file is there: the daemon accepted it and it is live."""
    wait_until(lambda: folder.is_dir() and any(folder.glob("trainable-*.pkl")), "A to start")


@pytest.mark.daemon_args("--num-cpus", "2", "--num-gpus", "0")
def test_a_link_to_the_same_folder_is_refused_while_the_first_runs(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(results)
    first = Running(results, Gate(tmp_path / "go"))
    wait_accepted(results / "same")
    opened = Gate(tmp_path / "open")  # B, if accepted, ends at once: the test fails, never hangs
    opened.open()
    with pytest.raises(TuneError, match="still running in the folder") as refused:
        tuner(alias, "B", opened).fit()
    assert "tuned cancel" in str(refused.value)
    assert len(list((results / "same").glob("trainable-*.pkl"))) == 1
    assert first.release() == ["A"]
    # Once A has ended, the folder is free again (as Ray Tune reuses it).
    again = tuner(alias, "B", opened).fit()
    assert [r.metrics["who"] for r in again] == ["B"]


def test_a_second_daemon_cannot_run_an_experiment_in_a_live_ones_folder(
    daemon_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one: RunningDaemon = daemon_factory("--num-cpus", "1", "--num-gpus", "0")
    two: RunningDaemon = daemon_factory("--num-cpus", "1", "--num-gpus", "0")
    results = tmp_path / "results"
    use_daemon(one, monkeypatch)
    first = Running(results, Gate(tmp_path / "go"))
    wait_accepted(results / "same")
    use_daemon(two, monkeypatch)
    opened = Gate(tmp_path / "open")
    opened.open()
    with pytest.raises(TuneError, match="another tuned daemon"):
        tuner(results, "B", opened).fit()
    assert first.release() == ["A"]


def test_made_up_names_of_the_same_second_under_two_daemons_both_run(
    daemon_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name fit() makes up (trainable and second) takes a suffix, not a refusal."""
    import tuned_client.tune.spec as spec

    monkeypatch.setattr(spec.time, "strftime", lambda fmt, *a: "2026-01-01_00-00-00")
    one: RunningDaemon = daemon_factory("--num-cpus", "1", "--num-gpus", "0")
    two: RunningDaemon = daemon_factory("--num-cpus", "1", "--num-gpus", "0")
    results = tmp_path / "results"
    gate = Gate(tmp_path / "go")

    def unnamed(who: str, go: Gate) -> tune.Tuner:
        return tune.Tuner(
            gated,
            param_space={"who": who, "gate": str(go)},
            run_config=tune.RunConfig(storage_path=str(results), verbose=0),
        )

    use_daemon(one, monkeypatch)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(a=unnamed("A", gate).fit()))
    thread.start()
    wait_accepted(results / "gated_2026-01-01_00-00-00")
    use_daemon(two, monkeypatch)
    opened = Gate(tmp_path / "open")
    opened.open()
    second = unnamed("B", opened).fit()
    assert [r.metrics["who"] for r in second] == ["B"]
    assert second.experiment_path.endswith("gated_2026-01-01_00-00-00_2")
    gate.open()
    thread.join(timeout=120)
    assert [r.metrics["who"] for r in outcome["a"]] == ["A"]
