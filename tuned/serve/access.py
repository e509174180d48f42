"""Who may talk to the daemon, and how many connections each may hold.

The socket is the security boundary: whoever is served can run code as the
daemon's user. So a peer is served only if ``SO_PEERCRED`` says it is the
daemon's own uid, a uid on the allow-list, or a member of an allowed group.
And one misbehaving client (a script leaking connections in a loop) must not
use up the daemon's file descriptors for everyone: connections are capped per
peer process and in total, and the caps are checked before anything is read.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import resource
import socket
import struct
import weakref
from collections import Counter
from dataclasses import dataclass

from ..config import Settings
from .lograte import Throttle

# Descriptors kept free for the journal, result files, trial pipes and zygotes.
FD_RESERVE = 256


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_creds(sock: socket.socket) -> Peer | None:
    """The connecting process's pid, uid and gid, as the kernel saw them at connect."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(int(pid), int(uid), int(gid))


def allowed(settings: Settings, uid: int, gid: int) -> bool:
    """The daemon's own uid, an allowed uid, or a member of an allowed group."""
    if uid == os.getuid() or uid in settings.allow_uids:
        return True
    if not settings.allow_groups:
        return False
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    for name in settings.allow_groups:
        try:
            group = grp.getgrnam(name)
        except KeyError:
            continue
        if gid == group.gr_gid or (user is not None and user in group.gr_mem):
            return True
    return False


def check(settings: Settings, peer: Peer | None) -> str | None:
    """Why ``peer`` is refused, or None if it may be served.

    A peer whose credentials the kernel could not give is refused: the socket is
    the security boundary, and an unknown caller is not a trusted one.
    """
    if peer is None:
        return "cannot tell who is connecting (SO_PEERCRED failed); refusing"
    if allowed(settings, peer.uid, peer.gid):
        return None
    extra = ""
    if settings.allow_uids or settings.allow_groups:
        extra = " and the uids/groups it was started with (--allow-uid/--allow-group)"
    return f"this daemon only serves its own user{extra}"


def total_cap(settings: Settings) -> int:
    """The total cap, lowered to what the open-files limit leaves room for.

    The soft limit is first raised to the hard one: an ``accept`` failing with
    EMFILE would otherwise take the listener (and the daemon) down before the
    cap could refuse anyone.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    room = max(16, (soft - FD_RESERVE) // 2) if soft != resource.RLIM_INFINITY else 1 << 30
    return min(settings.max_connections, room)


class Gate:
    """Counts open connections, per peer process and in total."""

    def __init__(self, settings: Settings) -> None:
        self.per_peer = settings.max_connections_per_peer
        self.total = total_cap(settings)
        self.open = 0
        self.by_peer: Counter[tuple[int, int]] = Counter()
        self.subscribed: Counter[tuple[int, int]] = Counter()
        self.log_throttle = Throttle()  # refusals in a burst: a log line a second, counted

    def enter(self, peer: Peer | None) -> str | None:
        """Count one more connection, or say which limit refuses it."""
        key = _key(peer)
        if self.open >= self.total:
            return (
                f"too many connections: the daemon holds {self.open}, its limit "
                f"(max_connections) is {self.total}"
            )
        if self.by_peer[key] >= self.per_peer:
            return (
                f"too many connections from process {key[1]}: it holds {self.by_peer[key]}, "
                f"the limit per client (max_connections_per_peer) is {self.per_peer}"
            )
        self.open += 1
        self.by_peer[key] += 1
        return None

    def subscribe(self, peer: Peer | None, delta: int) -> None:
        """A connection of ``peer`` follows events (+1) or stopped (-1)."""
        key = _key(peer)
        self.subscribed[key] += delta
        if self.subscribed[key] <= 0:
            del self.subscribed[key]

    def exempt(self, peer: Peer | None) -> bool:
        """Whether ``peer``'s idle connections are kept: it follows an experiment.

        ``fit()`` with a scheduler keeps a control connection that is quiet for
        as long as its trials run, beside the connection that streams events.
        """
        return self.subscribed[_key(peer)] > 0

    def leave(self, peer: Peer | None) -> None:
        key = _key(peer)
        self.open -= 1
        self.by_peer[key] -= 1
        if self.by_peer[key] <= 0:
            del self.by_peer[key]


def _key(peer: Peer | None) -> tuple[int, int]:
    return (peer.uid, peer.pid) if peer is not None else (-1, -1)


_gates: weakref.WeakKeyDictionary[object, Gate] = weakref.WeakKeyDictionary()


def gate_for(daemon: object, settings: Settings) -> Gate:
    gate = _gates.get(daemon)
    if gate is None:
        gate = _gates[daemon] = Gate(settings)
    return gate
