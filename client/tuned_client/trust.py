"""Which socket a client may talk to: one in a folder its user owns, served by its user.

Whoever answers on the socket receives the client's trainable (code it will run)
and its environment (API tokens and all). The default socket sits in a shared
``/tmp`` when ``XDG_RUNTIME_DIR`` is unset, where another local user could
create the folder first and listen there. So before a byte is sent, every
client (``Tuner.fit``, the ``tuned`` command, trial workers and spares) checks:

1. the socket's folder belongs to a trusted uid and nobody else can write to it
   (else whoever can write there may swap the socket), and
2. the process listening is a trusted uid (``SO_PEERCRED`` on our end).

A trusted uid is the client's own, or one named in ``TUNED_DAEMON_UID`` (a
number or a user name) for a daemon shared by a team (``tuned start
--allow-uid/--allow-group``). Anything else is refused with an error that
names the path and its owner.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

from .errors import TunedError

DAEMON_UID_VAR = "TUNED_DAEMON_UID"


class UntrustedSocket(TunedError):
    """The socket, its folder or the process behind it belongs to someone else."""


def trusted_uids(environ: Mapping[str, str] | None = None) -> frozenset[int]:
    """Our own uid and the one ``TUNED_DAEMON_UID`` names, if any."""
    env = os.environ if environ is None else environ
    uids = {os.getuid()}
    named = env.get(DAEMON_UID_VAR, "").strip()
    if named:
        uids.add(_uid_of(named))
    return frozenset(uids)


def _uid_of(named: str) -> int:
    if named.isdigit():
        return int(named)
    try:
        return pwd.getpwnam(named).pw_uid
    except KeyError:
        raise UntrustedSocket(f"{DAEMON_UID_VAR}={named!r}: no such user") from None


def describe_uid(uid: int) -> str:
    """``alice (uid 1000)``, or ``uid 1000`` for a uid with no name."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _whom(trusted: frozenset[int]) -> str:
    names = " or ".join(describe_uid(u) for u in sorted(trusted))
    return f"you ({names})" if trusted == {os.getuid()} else names


def check_folder(path: Path, trusted: frozenset[int] | None = None) -> None:
    """Refuse a socket whose folder is someone else's or writable by others.

    The folder is looked at where it really is (links followed): what matters
    is who can put a socket there. A missing folder is not refused: there is
    no daemon to talk to, and connecting says so.
    """
    trusted = trusted_uids() if trusted is None else trusted
    folder = path.parent
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UntrustedSocket(f"cannot check the socket's folder {folder}: {exc.strerror}") from exc
    if st.st_uid not in trusted:
        raise UntrustedSocket(
            f"refusing to use the socket {path}: its folder {folder} belongs to "
            f"{describe_uid(st.st_uid)}, not to {_whom(trusted)}. Someone else may be "
            f"listening there: remove the folder, or point TUNED_SOCKET at a socket of yours "
            f"(for a daemon shared by another user, set {DAEMON_UID_VAR} to that user)"
        )
    if stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedSocket(
            f"refusing to use the socket {path}: its folder {folder} "
            f"(owned by {describe_uid(st.st_uid)}) is writable by others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), so anyone could replace the socket; "
            f"make it 0700 (chmod 700 {folder})"
        )


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket, as the kernel saw it."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def check_peer(sock: socket.socket, path: Path, trusted: frozenset[int] | None = None) -> None:
    """Refuse a connected socket whose listener is not a trusted uid."""
    trusted = trusted_uids() if trusted is None else trusted
    uid = peer_uid(sock)
    if uid is None:
        raise UntrustedSocket(f"refusing to use the socket {path}: cannot tell who listens there")
    if uid not in trusted:
        raise UntrustedSocket(
            f"refusing to use the socket {path}: the process listening there runs as "
            f"{describe_uid(uid)}, not as {_whom(trusted)}"
        )


def connect(path: str | Path) -> socket.socket:
    """A socket connected to ``path`` and checked as above, before anything is sent.

    Raises ``OSError`` (no daemon, a full backlog) as ``socket.connect`` does,
    and ``UntrustedSocket``.
    """
    where = Path(path)
    trusted = trusted_uids()
    check_folder(where, trusted)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(where))
        check_peer(sock, where, trusted)
    except BaseException:
        sock.close()
        raise
    return sock
