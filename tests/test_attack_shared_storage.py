"""On a shared storage_path, another user's folder never holds code our trials load.

An experiment's folder holds the pickled trainable (``trainable-<id>.pkl``) and
``with_parameters`` objects, which trials unpickle as we run them. Found by an
attack: another local user created ``<shared storage>/exp`` (mode 0777) first;
``fit(name="exp")`` used it, and the attacker swapped the trainable file while
the first trial ran: the next trial ran the attacker's code as us. The daemon
(and the client, before it writes a parameter object) must refuse a folder that
another user owns or can write, or can rename away, or reach through a link of
theirs, naming the path and the owner. The other user is ``nobody``
(``setpriv``), in a sticky world-writable folder made for the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, need_other_uids, socket_path
from tuned_client import tune
from tuned_client.tune.result import TuneError

NOBODY = 65534


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder like /tmp: world-writable and sticky; removed with all it holds.

    It lives in the session's socket folder, which others may pass through (0711).
    """
    base = socket_path("shared").parent
    base.chmod(0o1777)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(*argv: str) -> None:
    need_other_uids()
    subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        check=True,
        timeout=30,
    )


def trainable(config: dict) -> dict:
    return {"x": config["x"]}


def fit(storage: Path, name: str = "exp", **params: object) -> tune.ResultGrid:
    return tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2]), **params},
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    ).fit()


@pytest.mark.root
def test_a_folder_another_user_made_first_is_refused(
    daemon: RunningDaemon, shared: Path
) -> None:
    squat = shared / "exp"
    as_nobody("sh", "-c", f"mkdir -m 0777 {squat} && chmod 0777 {squat}")
    with pytest.raises(TuneError) as refused:
        fit(shared)
    assert str(squat) in str(refused.value) and "nobody" in str(refused.value)
    assert os.listdir(squat) == [], "something of ours was written in their folder"


@pytest.mark.root
def test_with_parameters_writes_nothing_in_another_users_folder(
    daemon: RunningDaemon, shared: Path
) -> None:
    squat = shared / "exp"
    as_nobody("sh", "-c", f"mkdir -m 0777 {squat} && chmod 0777 {squat}")
    big = b"p" * (1 << 17)  # over the inline limit: stored in <experiment>/.parameters
    with pytest.raises(Exception, match="nobody"):
        tune.Tuner(
            tune.with_parameters(trainable, data=big),
            param_space={"x": 1},
            run_config=tune.RunConfig(name="exp", storage_path=str(shared), verbose=0),
        ).fit()
    assert not (squat / ".parameters").exists() or os.listdir(squat / ".parameters") == []


@pytest.mark.root
def test_a_link_another_user_owns_is_refused(
    daemon: RunningDaemon, shared: Path, tmp_path: Path
) -> None:
    """Their link to a folder of ours: they could point it at one of theirs later."""
    ours = tmp_path / "ours"
    ours.mkdir()
    as_nobody("ln", "-s", str(ours), str(shared / "exp"))
    with pytest.raises(TuneError, match="link owned by nobody"):
        fit(shared)
    assert os.listdir(ours) == []


def test_our_own_folder_writable_by_everyone_is_refused(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "exp").mkdir(mode=0o777)
    (tmp_path / "open" / "exp").chmod(0o777)
    with pytest.raises(TuneError, match="writable by every user"):
        fit(tmp_path / "open")


def test_a_storage_path_anyone_can_rename_in_is_refused(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    """World-writable without the sticky bit: our folder could be renamed and replaced."""
    root = tmp_path / "wide-open"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(TuneError, match="not sticky"):
        fit(root)


def test_a_sticky_shared_storage_path_works(daemon: RunningDaemon, shared: Path) -> None:
    grid = fit(shared)
    assert not grid.errors
    assert sorted(r.metrics["x"] for r in grid) == [1, 2]
    assert (shared / "exp").stat().st_uid == os.getuid()
