"""Who can reach the socket: its directory's and its own modes, as the allow-list needs.

Only the daemon's user by default (0700 / 0600); ``--allow-group G`` lets G's
members reach it (0750 / 0660, group G); ``--allow-uid`` lets everyone reach
it (0711 / 0666) and leaves the refusal to the daemon's ``SO_PEERCRED`` check.
Reaching it as another user needs root (``setpriv``); the mode checks do not.
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RunningDaemon, as_other_user, socket_path, start_daemon


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_by_default_only_the_owner_can_reach_the_socket(daemon: RunningDaemon) -> None:
    assert mode(daemon.socket.parent) == 0o700
    assert mode(daemon.socket) == 0o600


@pytest.mark.root
def test_allow_group_opens_the_socket_to_that_group_only(daemon_factory: object) -> None:
    nogroup = grp.getgrgid(65534).gr_name
    d: RunningDaemon = daemon_factory("--num-cpus", "1", "--allow-group", nogroup)  # type: ignore[operator]
    assert (mode(d.socket.parent), mode(d.socket)) == (0o750, 0o660)
    assert os.lstat(d.socket.parent).st_gid == os.lstat(d.socket).st_gid == 65534
    assert as_other_user(d.socket, 65534, 65534) == "served"  # a member, without chmod by hand
    assert as_other_user(d.socket, 65533, 65533) == "unreachable: PermissionError"


@pytest.mark.root
def test_allow_uid_lets_everyone_reach_the_socket_and_the_uid_check_decides(
    daemon_factory: object,
) -> None:
    d: RunningDaemon = daemon_factory("--num-cpus", "1", "--allow-uid", "65534")  # type: ignore[operator]
    assert (mode(d.socket.parent), mode(d.socket)) == (0o711, 0o666)
    assert as_other_user(d.socket, 65534, 65534) == "served"
    refused = as_other_user(d.socket, 65533, 65533)
    assert refused.startswith("refused: this daemon only serves its own")


def test_a_private_directory_left_open_is_closed_again(daemon_factory: object) -> None:
    """A socket dir opened by an earlier --allow-uid daemon goes back to 0700 without it."""
    d: RunningDaemon = daemon_factory("--num-cpus", "1", "--allow-uid", "65534")  # type: ignore[operator]
    d.stop()
    again = start_daemon(d.state_dir.parent, ["--num-cpus", "1"], name=d.state_dir.name[:-6])
    try:
        assert again.socket == d.socket
        assert (mode(d.socket.parent), mode(d.socket)) == (0o700, 0o600)
    finally:
        again.stop()


def test_a_link_planted_where_the_socket_directory_goes_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "attacker"
    target.mkdir()
    planted = socket_path("planted").parent / "here"  # in the session's socket folder
    planted.symlink_to(target)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "tuned", "start", "--foreground", "--num-cpus", "1",
             "--socket", str(planted / "tuned.sock"), "--state-dir", str(tmp_path / "state")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        planted.unlink()
    assert out.returncode != 0
    assert f"{planted} is not a plain directory; refusing to use it" in out.stderr
    assert list(target.iterdir()) == []  # nothing was created through the link
