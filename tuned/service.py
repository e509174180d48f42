"""The daemon's life: take the lock, listen, serve, and shut down cleanly.

One root task group holds the listener, admission, the idle watch and every
connection and trial. SIGTERM/SIGINT (or a ``Shutdown`` request) cancel it; each
trial's shielded cleanup then terminates and reaps its process tree, and the
journal is synced before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import os
import signal
import stat
from pathlib import Path

import anyio
import structlog
from anyio.abc import SocketListener, SocketStream

from .config import Settings
from .core.ledger import SCALE
from .daemon import Daemon
from .daemon.recovery import recover
from .logs import LOG_LIMIT
from .run.inventory import GpuProbe
from .run.launcher import ClusterLauncher, Launcher
from .serve.lograte import Throttle, loop_exception_handler
from .serve.server import handle_connection
from .store.private import private_dir, rotate, tighten, write_private

log = structlog.get_logger("tuned.service")

# A journal past this at a clean stop is compacted then: the next start is instant.
STOP_COMPACT_BYTES = 1 << 20


class AlreadyRunning(Exception):
    pass


def socket_modes(settings: Settings) -> tuple[int, int, int | None]:
    """The socket directory's mode, the socket's mode and its group, from the allow-list.

    Only the daemon's user: 0700 and 0600. One ``--allow-group``: 0750 and 0660
    with that group, so its members (and nobody else) can reach the socket. Any
    ``--allow-uid`` (or several groups, which one file cannot carry): 0711 and
    0666, so anyone can reach it and the ``SO_PEERCRED`` check (``access``) is
    what refuses everyone not on the list.
    """
    if settings.allow_uids or len(settings.allow_groups) > 1:
        return 0o711, 0o666, None
    if settings.allow_groups:
        return 0o750, 0o660, grp.getgrnam(settings.allow_groups[0]).gr_gid
    return 0o700, 0o600, None


def secure_dir(path: Path, mode: int = 0o700, gid: int | None = None) -> None:
    """Create ``path`` (0700 until opened up), refuse a link or someone else's, set ``mode``.

    The checks and changes go through one descriptor opened with ``O_NOFOLLOW``:
    a link planted at ``path`` in a shared /tmp is refused, never followed, and
    the directory cannot be swapped between the check and the ``fchmod``.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP (a link) or ENOTDIR
        raise PermissionError(f"{path} is not a plain directory; refusing to use it") from exc
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise PermissionError(
                f"{path} belongs to uid {st.st_uid}, not to us; refusing to use it"
            )
        if gid is not None and st.st_gid != gid:
            try:
                os.fchown(fd, -1, gid)
            except OSError as exc:
                raise PermissionError(
                    f"cannot give {path} to group {gid} for --allow-group: {exc.strerror} "
                    "(the daemon's user must be a member of the group)"
                ) from exc
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


async def open_listener(settings: Settings) -> SocketListener:
    """Listen on the socket with the mode (and group) the allow-list needs.

    The socket lives in a directory only we can write to, so nobody can swap it
    between ``bind`` and the ``chmod``/``chown`` below; until then it has the
    umask's mode, which lets in nobody that the final mode would not.
    """
    _, mode, gid = socket_modes(settings)
    listener = await anyio.create_unix_listener(settings.socket_path, mode=mode)
    if gid is not None:
        try:
            os.chown(settings.socket_path, -1, gid, follow_symlinks=False)
        except OSError:
            await listener.aclose()
            raise
    return listener


def take_lock(path: Path, taken: str, *, folder: bool = False) -> int:
    """An exclusive lock on ``path`` held for the daemon's life; ``taken`` says by whom if not.

    ``folder``: lock the folder itself (nothing to create: a read-only one locks too).
    """
    if folder:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(taken) from None
    return fd


def take_locks(settings: Settings) -> list[int]:
    """One daemon per socket, and one per state folder.

    Two daemons on one state folder would share its journal, each start would
    empty the other's archive, and recovery would kill the other's trials. The
    folder's own descriptor is locked: nothing is created, so a read-only one works.
    """
    running = f"a tuned daemon is already running on {settings.socket_path}"
    fds = [take_lock(settings.lock_path, running)]
    try:
        holder = _pid_in(settings.pid_path)
        fds.append(
            take_lock(
                settings.state_dir,
                f"another tuned daemon{holder} uses the state folder {settings.state_dir}: "
                "give this one its own (--state-dir or TUNED_STATE_DIR)",
                folder=True,
            )
        )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _pid_in(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(path.read_text().strip())})"
    return ""


def _ignore_sigpipe() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


async def serve(daemon: Daemon) -> None:
    """Listen, recover, serve. The socket answers ``status`` while the journal is replayed."""
    settings = daemon.settings
    asyncio.get_running_loop().set_exception_handler(loop_exception_handler(Throttle()))
    listener = await open_listener(settings)
    try:
        write_private(settings.pid_path, f"{os.getpid()}\n".encode())
    except OSError as exc:  # a read-only state dir: serve what we have, refuse new work
        log.error("cannot write the pid file", path=str(settings.pid_path), error=str(exc))
    log.info(
        "tuned daemon listening",
        socket=str(settings.socket_path),
        pid=os.getpid(),
        cpus=daemon.capacity.cpu / SCALE,
        gpus=list(daemon.capacity.gpu_ids),
        memory=daemon.capacity.memory,
    )
    try:
        async with anyio.create_task_group() as tg:
            daemon.started(tg)
            daemon.shutdown_scope = tg.cancel_scope
            tg.start_soon(_signals, tg)

            async def accept(stream: SocketStream) -> None:
                await handle_connection(daemon, stream)

            tg.start_soon(listener.serve, accept, tg)
            if settings.ready_fd is not None:
                os.write(settings.ready_fd, b"1")
                os.close(settings.ready_fd)
            if settings.recovery_gate is not None:
                await _wait_for_word(settings.recovery_gate)
            await recover(daemon)  # the snapshot and the journal after it
            daemon.recovered.set()
            daemon.maybe_compact()  # a long replay is not paid twice
            tg.start_soon(daemon.admission_loop, tg)
            for exp in list(daemon.experiments.values()):
                daemon.watch_budget(exp)  # recovered experiments' time budgets
                daemon.expect_driver(exp)  # and their scripts, which may reconnect
            tg.start_soon(daemon.sample_forever)
            tg.start_soon(daemon.flush_results_forever)
            if isinstance(daemon.launcher, ClusterLauncher):
                tg.start_soon(daemon.launcher.watch, daemon.resize)
            if settings.idle_timeout_s > 0:
                tg.start_soon(_idle_watch, daemon, tg)
    finally:
        daemon.stopping = True
        with anyio.CancelScope(shield=True):
            await listener.aclose()
            if daemon.recovered.is_set() and daemon.journal.size > STOP_COMPACT_BYTES:
                daemon.compact_now()  # the next start reads a snapshot, not the journal
            daemon.journal.close()
            if isinstance(daemon.launcher, ClusterLauncher):
                daemon.launcher.close()
            for path in (settings.socket_path, settings.pid_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        log.info("tuned daemon stopped")


async def _wait_for_word(fifo: Path) -> None:
    """Tests: hold recovery back until the test writes to ``fifo`` (an event, not a poll)."""
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer of our own: no EOF to spin on
    try:
        while True:
            await anyio.wait_readable(fd)
            if os.read(fd, 1):
                return
    finally:
        os.close(fd)


async def _signals(tg: anyio.abc.TaskGroup) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("stopping on signal", signal=signal.Signals(signum).name)
            tg.cancel_scope.cancel()
            return


async def _idle_watch(daemon: Daemon, tg: anyio.abc.TaskGroup) -> None:
    """Exit after ``idle_timeout_s`` with no client and no unfinished experiment."""
    while True:
        activity = daemon.activity
        if daemon.busy:
            await activity.wait()
            continue
        with anyio.move_on_after(daemon.settings.idle_timeout_s) as scope:
            await activity.wait()
        if scope.cancelled_caught and not daemon.busy:
            log.info("exiting after being idle", seconds=daemon.settings.idle_timeout_s)
            tg.cancel_scope.cancel()
            return


def run(settings: Settings, probe: GpuProbe, launcher: Launcher) -> None:
    """Run the daemon in this process until it is stopped."""
    dir_mode, _, gid = socket_modes(settings)
    secure_dir(settings.socket_path.parent, dir_mode, gid)
    private_dir(settings.state_dir)
    lock_fds = take_locks(settings)
    if tighten(settings.state_dir):  # files an older version made 0644
        log.info("made the state folder owner-only", path=str(settings.state_dir))
    rotate(settings.state_dir / "zygotes.log", LOG_LIMIT)  # tuned.log rotates as it is written
    _ignore_sigpipe()
    try:
        daemon = Daemon(settings, probe, launcher)
        anyio.run(serve, daemon, backend="asyncio", backend_options={"use_uvloop": True})
    finally:
        for fd in lock_fds:
            os.close(fd)
