"""The suite's fixtures, and what keeps it to itself.

``daemon`` starts a real daemon with ``--num-cpus 4 --num-gpus 1`` (override with
the ``daemon_args`` marker) and points this process at it through the same
environment variables a user would set (``TUNED_SOCKET``, ...). The helpers that
tests share live in ``daemons`` (daemons, requests, events, the CLI) and
``gates`` (waiting on trials in other processes); the common ones are
importable from here too.

Every test runs in a private world (the autouse ``isolated`` fixture): its own
HOME, XDG folders and TMPDIR under its ``tmp_path``, and none of the developer's
``TUNED_*``, ``RAY_*`` or ``TUNE_*`` settings, so no test reads or writes
``~/tuned_results``, ``~/.ray`` or the developer's own daemon. Daemons and the
trials they start inherit that world. At the end of the session, anything new in
/tmp that looks like the suite's own fails the run (``litter``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from daemons import (  # noqa: F401  (shared through conftest: tests import them from here)
    PROBE,
    PY,
    REPO,
    RunningDaemon,
    alive,
    as_other_user,
    ask,
    first_of_each,
    ledger_in_use,
    need_other_uids,
    next_event,
    probe,
    remove_socket_root,
    restart_daemon,
    socket_path,
    socket_root,
    start_daemon,
    start_script,
    started_by_test,
    tuned,
    tuned_bg,
    tuned_ok,
    use_daemon,
)
from gates import Gate
from litter import litter, other_pytest_runs

ISOLATED_PREFIXES = ("TUNED_", "RAY_", "TUNE_")  # the developer's daemon, cluster and knobs


def private_env(root: Path, cache: Path) -> dict[str, str]:
    """This process's environment minus the developer's settings, with folders of its own.

    HOME and the XDG folders go under ``root``; XDG_RUNTIME_DIR and TMPDIR, where
    programs put their Unix sockets (107 bytes at most), in a short folder of the
    session's socket root (``temp_root(env)`` names it; remove it when done).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES)}
    home, short = root / "home", Path(tempfile.mkdtemp(dir=socket_root()))
    folders = {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "XDG_CACHE_HOME": cache,  # the session's: only caches, slow to rebuild per test
        "XDG_RUNTIME_DIR": short / "run",
        "TMPDIR": short / "tmp",  # trials' mkdtemp() and TemporaryDirectory() land here
    }
    for key, path in folders.items():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[key] = str(path)
    return env


def temp_root(env: Mapping[str, str]) -> Path:
    """The short folder of ``private_env``'s XDG_RUNTIME_DIR and TMPDIR."""
    return Path(env["TMPDIR"]).parent


def put_away(d: RunningDaemon) -> None:
    """Stop ``d`` if it still runs (SIGKILL if SIGTERM is not enough); remove its socket folder."""
    if d.proc.poll() is None:
        try:
            d.stop()
        except subprocess.TimeoutExpired:
            d.stop(signal.SIGKILL)
    shutil.rmtree(d.socket.parent, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The test's private world; the daemons it started are stopped when it ends."""
    env = private_env(tmp_path, tmp_path_factory.getbasetemp() / "cache")
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", env["TMPDIR"])  # tempfile caches it
    started_by_test.clear()
    yield env
    for d in started_by_test:
        put_away(d)
    started_by_test.clear()
    for gate in Gate.made:
        gate.open()
    Gate.made.clear()
    shutil.rmtree(temp_root(env), ignore_errors=True)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Callable[..., RunningDaemon]:
    """Starts daemons for this test (``d0``, ``d1``, ...); each is stopped when it ends."""
    count = 0

    def factory(*args: str, name: str = "d") -> RunningDaemon:
        nonlocal count
        count += 1
        return start_daemon(tmp_path, list(args), name=f"{name}{count - 1}")

    return factory


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest,
    daemon_factory: Callable[..., RunningDaemon],
    monkeypatch: pytest.MonkeyPatch,
) -> RunningDaemon:
    marker = request.node.get_closest_marker("daemon_args")
    args = list(marker.args) if marker else ["--num-cpus", "4", "--num-gpus", "1"]
    d = daemon_factory(*args)
    use_daemon(d, monkeypatch)
    return d


@pytest.fixture(scope="module")
def _module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """The daemon of ``module_daemon``: a private world of the module's own, like a test's."""
    base = tmp_path_factory.mktemp("module-daemon")
    env = private_env(base, tmp_path_factory.getbasetemp() / "cache")
    d = start_daemon(
        base, ["--num-cpus", "2", "--num-gpus", "0"], name="m", env=env, owned_by_test=False
    )
    try:
        yield d
    finally:
        put_away(d)
        shutil.rmtree(temp_root(env), ignore_errors=True)


@pytest.fixture
def module_daemon(
    isolated: dict[str, str], _module_daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> RunningDaemon:
    """One 2-CPU daemon for a whole module, as Ray's ``ray_start_2_cpus`` (the ported
    ``test_ray_*`` modules): each test starting its own would cost a second or more.
    Each test still has its private HOME and TMPDIR; only the daemon is shared."""
    use_daemon(_module_daemon, monkeypatch)
    return _module_daemon


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.getuid() != 0:
        pytest.skip("needs root (another uid through setpriv, or a mount); this run is not root")


# ----------------------------------------------------------------- nothing left in /tmp

_litter_before = pytest.StashKey[tuple[set[str], set[str], list[int]]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_litter_before] = (*litter(), other_pytest_runs())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run over what it left in /tmp (see ``litter``)."""
    remove_socket_root()
    ours_before, unsigned_before, others_before = session.stash[_litter_before]
    ours, unsigned = litter()
    new_ours, new_unsigned = sorted(ours - ours_before), sorted(unsigned - unsigned_before)
    others = others_before or other_pytest_runs()
    fail = new_ours + ([] if others else new_unsigned)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if new_unsigned and others and reporter is not None:
        reporter.write_line(
            f"new in /tmp, perhaps of the pytest run(s) {others} beside this one: "
            + ", ".join(f"/tmp/{name}" for name in new_unsigned),
            yellow=True,
        )
    if fail:
        if reporter is not None:
            message = ", ".join(f"/tmp/{name}" for name in fail)
            reporter.write_line(f"the suite left in /tmp: {message}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
