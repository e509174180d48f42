"""Who may be served: the daemon's own uid, allowed uids and groups, and nobody unknown."""

from __future__ import annotations

import os
from pathlib import Path

from tuned.config import Settings
from tuned.serve import access

SETTINGS = Settings(socket_path=Path("/nonexistent/tuned.sock"), state_dir=Path("/nonexistent"))


def test_the_daemons_own_uid_is_served() -> None:
    assert access.check(SETTINGS, access.Peer(pid=1, uid=os.getuid(), gid=os.getgid())) is None


def test_a_peer_whose_credentials_cannot_be_read_is_refused() -> None:
    reason = access.check(SETTINGS, None)
    assert reason is not None and "cannot tell who is connecting" in reason


def test_another_uid_is_refused_unless_allowed() -> None:
    stranger = access.Peer(pid=1, uid=os.getuid() + 4242, gid=4242)
    assert access.check(SETTINGS, stranger) == "this daemon only serves its own user"
    shared = Settings(
        socket_path=SETTINGS.socket_path, state_dir=SETTINGS.state_dir, allow_uids=(stranger.uid,)
    )
    assert access.check(shared, stranger) is None
    other = access.Peer(pid=1, uid=stranger.uid + 1, gid=4242)
    reason = access.check(shared, other)
    assert reason is not None and "--allow-uid/--allow-group" in reason
