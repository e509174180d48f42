"""The ``tuned`` command: start and stop the daemon, and look at it.

This is an edge: it reads ``TUNED_SOCKET``/``TUNED_STATE_DIR`` (through the
client's path defaults) and ``CUDA_VISIBLE_DEVICES``, and turns them into the
frozen ``Settings`` the daemon runs with.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuned_client import trust
from tuned_client.connection import Connection, DaemonError, DaemonUnavailable, TunedError
from tuned_client.paths import default_socket_path, default_state_dir
from tuned_client.protocol import MAX_FRAME_BYTES
from tuned_client.trust import UntrustedSocket

from ..config import Settings
from ..store.private import open_private, private_dir, rotate

# What the daemon prints outside its log (a crash's traceback) goes to daemon.out,
# moved aside at each start once it is this large.
DAEMON_OUT_LIMIT = 8 << 20


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, default=None, help="the daemon's Unix socket")
    parser.add_argument("--state-dir", type=Path, default=None, help="journal, logs, pid file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuned", description="A trial scheduler daemon.")
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start the daemon (in the background by default)")
    _common(start)
    start.add_argument("--foreground", action="store_true", help="run here, logging to stderr")
    start.add_argument("--num-cpus", type=float, default=None)
    start.add_argument("--num-gpus", type=int, default=None)
    start.add_argument("--memory", type=int, default=None, help="bytes")
    start.add_argument(
        "--resources", default="{}", help="custom resources as JSON: '{\"name\": amount}'"
    )
    start.add_argument(
        "--idle-timeout", type=float, default=0.0, help="exit after this many idle seconds"
    )
    start.add_argument("--log-level", default="info")
    start.add_argument(
        "--launcher",
        choices=("fork", "spawn"),
        default="fork",
        help="fork function trials from a warm per-experiment worker, or spawn each afresh",
    )
    start.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="run trials as processes here, or as tasks on a Ray cluster "
        "(pip install 'tuned[ray]')",
    )
    start.add_argument(
        "--ray-address",
        default="",
        metavar="ADDRESS",
        help="the Ray cluster for --executor ray: host:port of its head, or 'auto' (the default)",
    )
    start.add_argument("--if-needed", action="store_true", help="succeed if one is running")
    start.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    start.add_argument(
        "--gpu-release-timeout",
        type=float,
        default=10.0,
        help="longest a GPU waits for a finished trial's memory to be freed (seconds)",
    )
    # Tests: a fake GPU inventory (with --num-gpus) whose process memory is read from a file.
    start.add_argument("--fake-gpu-state", type=Path, default=None, help=argparse.SUPPRESS)
    # Tests: how long a new connection has to say hello.
    start.add_argument("--handshake-timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    # Tests: compactions at a small journal size, and a recovery that waits for a word.
    start.add_argument("--compact-bytes", type=int, default=4 << 20, help=argparse.SUPPRESS)
    start.add_argument("--recovery-gate", type=Path, default=None, help=argparse.SUPPRESS)
    # Tests: a smaller frame cap, so replies that must be paged are paged with little data.
    start.add_argument(
        "--max-frame-bytes", type=int, default=MAX_FRAME_BYTES, help=argparse.SUPPRESS
    )
    # Tests: small event bounds, so a test fills them with little data.
    start.add_argument("--event-history-bytes", type=int, default=None, help=argparse.SUPPRESS)
    start.add_argument("--subscriber-buffer-bytes", type=int, default=None, help=argparse.SUPPRESS)
    # Tests: how long a zygote's spare may wait for a trial before it is retired.
    start.add_argument("--spare-idle-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    start.add_argument(
        "--driver-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long an experiment steered from a script (a searcher, scheduler or stop "
        "function) waits for that script to reconnect before it is interrupted",
    )
    start.add_argument(
        "--low-memory-fraction",
        type=float,
        default=0.05,
        help="stop the youngest over-budget trial when less than this share of memory is free",
    )
    start.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        default=[],
        metavar="UID",
        help="also serve this uid (repeatable). The socket's directory becomes 0711 and the "
        "socket 0666: any local user can reach it, and the daemon's SO_PEERCRED check "
        "refuses every uid not allowed",
    )
    start.add_argument(
        "--allow-group",
        action="append",
        default=[],
        metavar="NAME",
        help="also serve members of this group (repeatable). With one group the socket's "
        "directory becomes 0750 and the socket 0660, both owned by that group",
    )
    start.add_argument(
        "--max-connections-per-client",
        type=int,
        default=64,
        help="connections one client process may hold open at once",
    )
    start.add_argument(
        "--max-connections", type=int, default=4096, help="connections held open in all"
    )
    start.add_argument(
        "--idle-connection-timeout",
        type=float,
        default=600.0,
        help="close a connection that neither follows events nor sends anything for this "
        "many seconds (0: never)",
    )

    for name, text in (("stop", "stop the daemon gracefully"), ("status", "daemon status")):
        cmd = sub.add_parser(name, help=text)
        _common(cmd)
        if name == "status":
            cmd.add_argument("--json", action="store_true")
    ls = sub.add_parser("ls", help="list experiments")
    _common(ls)
    ls.add_argument("--json", action="store_true")
    cancel = sub.add_parser("cancel", help="cancel experiments or trials")
    _common(cancel)
    cancel.add_argument("target", nargs="+", help="experiment or trial ids")
    _add_watch_commands(sub)
    return parser


def _add_watch_commands(sub: Any) -> None:
    from .submit import add_arguments

    tail = sub.add_parser("tail", help="follow events: a live view, a line each, or NDJSON")
    _common(tail)
    tail.add_argument("experiment", nargs="?", default="", help="only this experiment")
    tail.add_argument("--json", action="store_true", help="one JSON object per event")
    tail.add_argument("--since", type=int, default=None, help="events after this seq")
    logs = sub.add_parser("logs", help="a trial's stdout (or stderr)")
    _common(logs)
    logs.add_argument("trial", help="trial id, as `tuned status` or `tuned submit` shows")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until it ends")
    logs.add_argument("--stderr", action="store_true", help="show stderr instead of stdout")
    submit = sub.add_parser(
        "submit",
        help="queue a command as a trial (a grid of them with --grid)",
        usage="tuned submit [--cpu N] [--gpu F] [--grid k=v1,v2] [...] -- CMD [ARGS...]",
    )
    _common(submit)
    add_arguments(submit)
    tensorboard = sub.add_parser(
        "tensorboard", help="write an experiment's TensorBoard files and follow it to its end"
    )
    _common(tensorboard)
    tensorboard.add_argument("experiment", help="experiment id, as `tuned ls` shows")
    web = sub.add_parser(
        "web", help="serve a live page of every experiment on 127.0.0.1 (a token in its URL)"
    )
    _common(web)
    web.add_argument("--port", type=int, default=0, help="on 127.0.0.1 (default: a free one)")


def settings_from(args: argparse.Namespace) -> Settings:
    try:
        custom = json.loads(args.resources)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"tuned: --resources is not JSON: {exc}") from exc
    if not isinstance(custom, dict):
        raise SystemExit('tuned: --resources must be a JSON object like {"name": 2}')
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return Settings(
        socket_path=(args.socket or default_socket_path()).absolute(),
        state_dir=(args.state_dir or default_state_dir()).absolute(),
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        memory=args.memory,
        custom_resources={str(k): float(v) for k, v in custom.items()},
        visible_gpus=None if visible is None else tuple(x for x in visible.split(",") if x),
        idle_timeout_s=args.idle_timeout,
        foreground=args.foreground,
        log_level=args.log_level,
        ready_fd=args.ready_fd,
        gpu_release_timeout_s=args.gpu_release_timeout,
        fake_gpu_state=args.fake_gpu_state,
        low_memory_fraction=args.low_memory_fraction,
        allow_uids=tuple(args.allow_uid),
        allow_groups=tuple(_known_group(g) for g in args.allow_group),
        max_connections_per_peer=_at_least_one(args.max_connections_per_client, "per client"),
        max_connections=_at_least_one(args.max_connections, "in all"),
        idle_connection_timeout_s=args.idle_connection_timeout,
        handshake_timeout_s=args.handshake_timeout,
        max_frame_bytes=args.max_frame_bytes,
        compact_bytes=args.compact_bytes,
        recovery_gate=args.recovery_gate,
        spare_idle_s=args.spare_idle_timeout,
        driver_grace_s=args.driver_grace,
        **_event_bounds(args),
        executor=args.executor,
        ray_address=_ray_address(args),
    )


def _event_bounds(args: argparse.Namespace) -> dict[str, int]:
    """The event bounds given on the command line (the settings' defaults otherwise)."""
    given = {
        "event_history_bytes": args.event_history_bytes,
        "subscriber_buffer_bytes": args.subscriber_buffer_bytes,
    }
    return {k: v for k, v in given.items() if v is not None}


def _ray_address(args: argparse.Namespace) -> str:
    if args.ray_address and args.executor != "ray":
        raise SystemExit("tuned: --ray-address is for --executor ray")
    return str(args.ray_address or ("auto" if args.executor == "ray" else ""))


def _known_group(name: str) -> str:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        raise SystemExit(f"tuned: --allow-group {name!r}: no such group") from None
    return name


def _at_least_one(value: int, what: str) -> int:
    if value < 1:
        raise SystemExit(f"tuned: the connection limit {what} must be at least 1, not {value}")
    return value


def _alive(socket_path: Path) -> bool:
    try:
        Connection.open(socket_path, autostart=False).close()
    except (DaemonUnavailable, DaemonError, OSError):
        return False
    return True


def cmd_start(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if _alive(settings.socket_path):
        if args.if_needed:
            return 0
        print(f"tuned: a daemon is already running on {settings.socket_path}", file=sys.stderr)
        return 1
    if args.foreground or args.ready_fd is not None:
        return run_here(settings, args.launcher)
    return start_background(args)


def run_here(settings: Settings, launcher_name: str = "fork") -> int:
    from ..logs import configure_logging
    from ..run.forkserver import ForkLauncher
    from ..run.inventory import GpuProbe, NoGpus, detect_gpus
    from ..run.launcher import Launcher, SpawnLauncher
    from ..service import AlreadyRunning, run
    from ..store.journal import JournalUnreadable

    configure_logging(settings)
    launcher: Launcher = SpawnLauncher()
    probe: GpuProbe = NoGpus()
    if settings.executor == "ray":
        from ..run.ray_executor import RayLauncher, RayUnavailable

        try:
            launcher = RayLauncher(settings)
        except RayUnavailable as exc:
            print(f"tuned: {exc}", file=sys.stderr)
            return 1
    else:
        probe = detect_gpus(settings)
        if launcher_name == "fork":
            launcher = ForkLauncher(settings.state_dir / "zygotes.log")
    try:
        run(settings, probe, launcher)
    except (AlreadyRunning, PermissionError, JournalUnreadable) as exc:
        print(f"tuned: {exc}", file=sys.stderr)
        return 1
    return 0


def start_background(args: argparse.Namespace) -> int:
    """Fork the daemon off, then wait (on a pipe, not a poll) until it accepts."""
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "tuned", *sys.argv[1:], "--ready-fd", str(write_fd)]
    if args.socket is None:
        argv += ["--socket", str(default_socket_path())]
    if args.state_dir is None:
        argv += ["--state-dir", str(default_state_dir())]
    state_dir = (args.state_dir or default_state_dir()).absolute()
    try:
        private_dir(state_dir)  # 0700 from the first mkdir: the journal will hold secrets
    except PermissionError as exc:
        print(f"tuned: {exc}", file=sys.stderr)
        return 1
    out_path = state_dir / "daemon.out"
    rotate(out_path, DAEMON_OUT_LIMIT)
    out = open_private(out_path)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    finally:
        os.close(out)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        ok = ready.read(1) == b"1"
    if ok:
        return 0
    code = proc.wait()
    if args.if_needed and _alive((args.socket or default_socket_path()).absolute()):
        return 0  # another client started it first
    tail = (state_dir / "daemon.out").read_text(errors="replace")[-2000:]
    print(f"tuned: the daemon failed to start (exit {code}):\n{tail}", file=sys.stderr)
    return 1


def _connect(args: argparse.Namespace) -> Connection:
    try:
        return Connection.open(args.socket, autostart=False, client="tuned-cli")
    except DaemonUnavailable as exc:
        raise SystemExit(f"tuned: {exc}") from exc


def ours(socket_path: Path, timeout: float = 5.0) -> Connection:
    """A connection to the socket, only if a tuned trial-scheduler daemon serves it.

    ``tuned`` is also Red Hat's tuning daemon (``/usr/sbin/tuned``, ``tuned.service``,
    ``/run/tuned``), which root may run beside ours. Stopping must never reach it, so
    the peer has to answer our versioned msgpack handshake within ``timeout`` with a
    ``Welcome`` whose pid is the one the kernel reports for the socket's other end
    (SO_PEERCRED). Nothing is ever signalled: the daemon is asked to shut down.
    """
    from tuned_client.framing import FrameError

    try:
        if not stat.S_ISSOCK(os.stat(socket_path).st_mode):
            raise SystemExit(f"tuned: {socket_path} is not a socket")
    except FileNotFoundError:
        raise SystemExit(f"tuned: no daemon is running on {socket_path}") from None
    try:
        sock = trust.connect(socket_path)  # our user's folder and listener, or nothing is sent
    except (ConnectionRefusedError, FileNotFoundError):
        raise SystemExit(f"tuned: no daemon is running on {socket_path}") from None
    sock.settimeout(timeout)
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer_pid, _uid, _gid = struct.unpack("3i", creds)
        conn = Connection.handshake(sock, socket_path, "tuned-cli")
    except (OSError, FrameError, TunedError) as exc:
        sock.close()
        raise SystemExit(
            f"tuned: {socket_path} is not a tuned trial-scheduler daemon "
            f"(no answer to its handshake: {exc}); nothing was stopped"
        ) from None
    if conn.welcome.pid != peer_pid:
        conn.close()
        raise SystemExit(
            f"tuned: {socket_path} answered as pid {conn.welcome.pid} but is served by pid "
            f"{peer_pid}; nothing was stopped"
        )
    sock.settimeout(None)
    return conn


def cmd_stop(args: argparse.Namespace) -> int:
    from tuned_client.protocol import Shutdown

    socket_path = (args.socket or default_socket_path()).absolute()
    with ours(socket_path) as conn:
        pid = conn.welcome.pid
        try:
            conn.request(Shutdown())
        except DaemonError as exc:
            raise SystemExit(f"tuned: {exc.message}") from exc
    while _pid_alive(pid):
        time.sleep(0.02)  # waiting on another process's exit: no event to await
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _request(args: argparse.Namespace, req: Any) -> Any:
    with _connect(args) as conn:
        try:
            return conn.request(req)
        except DaemonError as exc:
            raise SystemExit(f"tuned: {exc.message}") from exc


def _watch(command: str, args: argparse.Namespace) -> int:
    from .logview import cmd_logs
    from .submit import cmd_submit
    from .tail import cmd_tail

    run = {"tail": cmd_tail, "logs": cmd_logs, "submit": cmd_submit}[command]
    return run(args, lambda: _connect(args))


def _web(args: argparse.Namespace) -> int:
    from ..web.serve import cmd_web

    return cmd_web(args)


def _tensorboard(args: argparse.Namespace) -> int:
    from .tbfiles import cmd_tensorboard

    return cmd_tensorboard(args)


def main(argv: list[str] | None = None) -> int:
    from . import status

    args = build_parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "start": cmd_start,
        "stop": cmd_stop,
        "status": lambda a: status.status(a, _request),
        "ls": lambda a: status.ls(a, _request),
        "cancel": lambda a: status.cancel(a, _request),
        "tail": lambda a: _watch("tail", a),
        "logs": lambda a: _watch("logs", a),
        "submit": lambda a: _watch("submit", a),
        "web": _web,
        "tensorboard": _tensorboard,
    }
    try:
        return int(commands[args.command](args))
    except UntrustedSocket as exc:  # someone else's socket: say whose, and touch nothing
        print(f"tuned: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
