"""Bad input gets a clear error at the boundary, and nothing already accepted is lost."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from conftest import RunningDaemon, as_other_user
from tuned_client import protocol as p
from tuned_client import tune


def ok(config: dict) -> dict:
    return {"value": 1}


def test_a_config_that_cannot_be_serialised_is_refused(daemon: RunningDaemon) -> None:
    tuner = tune.Tuner(ok, param_space={"lock": threading.Lock()})
    with pytest.raises(tune.TuneError, match=r"cannot be serialised: .*lock"):
        tuner.fit()


def test_a_trainable_that_cannot_be_pickled_is_refused_by_name(daemon: RunningDaemon) -> None:
    lock = threading.Lock()

    def holds_a_lock(config: dict) -> None:
        with lock:
            pass

    # Ray's TypeError, at Tuner() (also a TuneError), naming the variable and the function
    with pytest.raises(tune.TuneError, match=r"(?s)not serializable.*lock.*holds_a_lock"):
        tune.Tuner(holds_a_lock)


FRAGILE_MODULE = """
import os
if os.environ.get("FRAGILE_OK") != str(os.getpid()):
    raise ImportError("fragile cannot be imported in this process")

def train(config):
    return {"x": 1}
"""


def test_a_trainable_that_fails_to_import_in_the_trial_is_that_trials_error(
    daemon: RunningDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fragile.py").write_text(FRAGILE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FRAGILE_OK", str(os.getpid()))
    import fragile  # type: ignore[import-not-found]

    results = tune.Tuner(fragile.train, run_config=tune.RunConfig(verbose=0)).fit()
    assert results.num_errors == 1
    error = str(results.errors[0])
    assert "ImportError: fragile cannot be imported in this process" in error
    assert "Traceback" in error


def test_an_unwritable_storage_path_is_refused(daemon: RunningDaemon) -> None:
    with pytest.raises(tune.TuneError, match=r"storage_path '/proc/tuned-results' is not writable"):
        tune.Tuner(ok, run_config=tune.RunConfig(storage_path="/proc/tuned-results")).fit()


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ""])
def test_experiment_names_that_are_not_one_folder_are_refused(
    daemon: RunningDaemon, name: str
) -> None:
    if name == "":
        # An empty name means "make one up", as in Ray.
        results = tune.Tuner(ok, run_config=tune.RunConfig(name=name, verbose=0)).fit()
        assert Path(results.experiment_path).parent == daemon.storage
        return
    with pytest.raises(tune.TuneError, match="must be one folder name"):
        tune.Tuner(ok, run_config=tune.RunConfig(name=name)).fit()


def test_config_values_never_place_a_trial_outside_its_experiment(daemon: RunningDaemon) -> None:
    results = tune.Tuner(
        ok,
        param_space={"v": tune.grid_search(["../../../etc", "a/b/../../c"])},
        run_config=tune.RunConfig(name="contained", verbose=0),
    ).fit()
    for r in results:
        assert Path(r.path).resolve().parent == (daemon.storage / "contained").resolve()


def test_another_users_process_is_refused(daemon: RunningDaemon) -> None:
    # Open the directory and socket so only the daemon's own peer check stands in the way.
    os.chmod(daemon.socket.parent, 0o755)
    os.chmod(daemon.socket, 0o666)
    assert "only serves its own user" in as_other_user(daemon.socket)
    with daemon.connect() as conn:  # its own user is still served
        assert isinstance(conn.request(p.GetStatus()), p.StatusReply)


def test_a_command_template_the_config_cannot_fill_fails_that_trial_only(
    daemon: RunningDaemon,
) -> None:
    spec = p.ExperimentSpec(
        name="bad-template",
        storage_path=str(daemon.storage),
        trainable_name="cmd",
        trainable=b"",
        python=sys.executable,
        cwd=os.getcwd(),
        sys_path=[],
        env=dict(os.environ),
        trials=[p.TrialSpec(tag="0", config=p.pack_user({"lr": 0.1}))],
        command=["echo", "{missing}"],
    )
    with daemon.connect() as conn:
        accepted = conn.request(p.Submit(experiment=spec))
        assert isinstance(accepted, p.Accepted)
        conn.send(p.Subscribe(experiment_id=accepted.experiment_id, since=0))
        while not isinstance(msg := conn.recv(), p.TrialFinished):
            pass
    assert msg.status == "ERROR"
    assert "cannot fill the command template" in msg.error and "missing" in msg.error
    with daemon.connect() as conn:  # and the daemon is still there for everyone else
        assert isinstance(conn.request(p.GetStatus()), p.StatusReply)


def test_a_storage_path_that_links_to_nowhere_is_named_as_such(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    storage = tmp_path / "results"
    storage.symlink_to(tmp_path / "unmounted-disk")
    tuner = tune.Tuner(ok, run_config=tune.RunConfig(name="e", storage_path=str(storage)))
    with pytest.raises(tune.TuneError) as refused:
        tuner.fit()
    message = str(refused.value)
    assert f"{storage} is a symbolic link to '{tmp_path / 'unmounted-disk'}'" in message
    assert "which does not exist" in message
    assert "File exists" not in message


def test_an_experiment_name_taken_by_a_file_is_named_as_such(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    (tmp_path / "clash").write_text("a file, not a folder")
    tuner = tune.Tuner(ok, run_config=tune.RunConfig(name="clash", storage_path=str(tmp_path)))
    with pytest.raises(tune.TuneError) as refused:
        tuner.fit()
    message = str(refused.value)
    assert f"{tmp_path / 'clash'} is a file, not a folder" in message
    assert "in the way of the experiment's folder" in message
    assert "File exists" not in message
