"""A warm worker that forks one process per trial: ``python -m tuned_client.zygote FD``.

Starting a fresh interpreter per trial costs 20-40 ms of CPU; forking a process
that has already imported ``tuned_client``, ``cloudpickle`` and the trainable's
modules costs about a millisecond. The daemon starts one zygote per experiment
with the client's interpreter, working directory and environment, and talks to
it over the socket ``FD`` (length-prefixed msgpack frames, the messages below).

The zygote forks *spares* ahead of need: a spare becomes its own session leader
(so the daemon's ``killpg`` reaches everything it will start), connects to the
daemon and says ``SpareHello``, then waits. Admitting a trial is one frame, the
``Assignment`` the daemon writes to an idle spare's connection: the spare applies
the trial's environment, working directory and output files and runs exactly
what ``python -m tuned_client.worker`` runs. Fork, connect and handshake are
off the path from one trial's exit to the next one's first line. The zygote
reaps its children and reports each exit status, since the daemon is not their
parent. A zygote never holds a CUDA context: if loading the trainable
initialised CUDA it says so and exits, and the daemon spawns those trials.

No process a trial starts outlives it, even one that called ``setsid`` or was
double-forked away from its parent: each trial and the zygote are *child
subreapers*, so a trial's orphans stay in its tree while it runs (where the
daemon's tree kill finds them), and come to the zygote once it has exited. The
zygote kills and reaps every such orphan before it reports the trial's exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import selectors
import signal
import socket
import struct
import sys
from typing import Any

import msgspec

HEADER = struct.Struct(">I")
MAX_CONTROL_FRAME = 16 * 1024 * 1024
IDLE_EXIT_S = 30.0  # with no trial running and no request: exit, the daemon starts another


class Spawn(msgspec.Struct, tag="spawn"):
    """Daemon -> zygote: fork one spare that says hello to the daemon with ``token``."""

    pool: str
    token: str


class Ready(msgspec.Struct, tag="ready"):
    """Zygote -> daemon: preloaded, ready to fork."""

    pid: int


class Refuse(msgspec.Struct, tag="refuse"):
    """Zygote -> daemon: this experiment cannot be forked (the reason says why); exiting."""

    reason: str


class SpawnFailed(msgspec.Struct, tag="spawn_failed"):
    """Zygote -> daemon: a requested spare could not be forked."""

    error: str


class Exited(msgspec.Struct, tag="exited"):
    """Zygote -> daemon: a trial process ended (code, or minus the signal number)."""

    pid: int
    code: int


ToZygote = Spawn
FromZygote = Ready | Refuse | SpawnFailed | Exited

_encoder = msgspec.msgpack.Encoder()


def encode(message: Any) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


class FrameBuffer:
    """Accumulates bytes and yields whole frames (both ends use it)."""

    def __init__(self, decoder: msgspec.msgpack.Decoder[Any]) -> None:
        self.buf = bytearray()
        self.decoder = decoder

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buf)
            if length > MAX_CONTROL_FRAME:
                raise ValueError(f"control frame of {length} bytes is over the limit")
            end = HEADER.size + length
            if len(self.buf) < end:
                break
            out.append(self.decoder.decode(bytes(self.buf[HEADER.size : end])))
            del self.buf[:end]
        return out


PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> None:
    """Orphaned descendants of this process become its children (Linux; else a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def own_children() -> list[int]:
    """This process's children, zombies included, from /proc (no scan of every process)."""
    out: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:  # raw reads: this runs after every trial's exit
        try:
            fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY)
        except OSError:
            continue
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
        out.extend(int(c) for c in b"".join(chunks).split())
    return out


def cuda_initialised() -> str:
    """Why forking this process would be unsafe for CUDA, or "" when it is safe."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        return "importing the trainable initialised torch.cuda"
    try:
        with open("/proc/self/maps") as maps:
            if "libcuda.so" in maps.read():
                return "importing the trainable loaded the CUDA driver (libcuda.so)"
    except OSError:
        pass
    return ""


def preload(trainable_path: str, sys_path: list[str]) -> None:
    """Import what every trial needs, the trainable's own modules included."""
    from . import session, worker  # noqa: F401  (imported once, shared by every fork)

    sys.path[:] = list(dict.fromkeys([*sys_path, *sys.path]))
    worker.preload_trainable(trainable_path)


def _reseed() -> None:
    """Forked trials must not share the zygote's random state (``random`` reseeds itself)."""
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        np_random.seed()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "seed"):
        torch.seed()


def _spare(req: Spawn, close: list[int]) -> None:
    """In the forked child: become a session leader, then wait as a spare. Never returns."""
    try:
        os.setsid()
        set_child_subreaper()  # our descendants' orphans stay in our tree
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        _reseed()
        from . import worker

        worker.serve_as_spare(req.pool, req.token)  # dies with the zygote; os._exit
    except BaseException:  # before any trial was assigned: the reason goes to the zygote's log
        import traceback

        text = "tuned: a spare trial process failed:\n" + traceback.format_exc()
        os.write(2, text.encode())
    finally:
        os._exit(1)


class Zygote:
    """The fork loop: requests on the control socket, exits via SIGCHLD."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: set[int] = set()
        self.frames = FrameBuffer(msgspec.msgpack.Decoder(ToZygote))
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(self, message: Any) -> None:
        self.sock.sendall(encode(message))

    def spawn(self, req: Spawn) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            self.send(SpawnFailed(error=f"fork failed: {exc}"))
            return
        if pid == 0:
            _spare(req, [self.sock.fileno(), self.wake_r, self.wake_w])
        self.children.add(pid)

    def reap(self) -> None:
        """Reap exited children; kill a dead trial's orphans, then report its exit."""
        exits: list[Exited] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.children:  # else an orphan of a trial, reaped
                self.children.discard(pid)
                exits.append(Exited(pid=pid, code=os.waitstatus_to_exitcode(status)))
        if exits:
            self.kill_orphans()
        for message in exits:
            self.send(message)

    def kill_orphans(self) -> None:
        """SIGKILL and reap every child that is not a trial: what exited trials left.

        A trial is a subreaper while it runs, so orphans reach us only once their
        trial has exited. Killing one hands its own children to us: repeat until
        none is left (each round is a read of /proc/self/task/*/children).
        """
        for _ in range(10_000):
            orphans = [pid for pid in own_children() if pid not in self.children]
            if not orphans:
                return
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in orphans:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "control")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            events = sel.select(timeout=None if self.children else IDLE_EXIT_S)
            if not events and not self.children:
                return  # idle: free our memory; the daemon starts a new zygote on demand
            for key, _ in events:
                if key.data == "wake":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                    continue
                data = self.sock.recv(1 << 16)
                if not data:
                    return  # the daemon is gone; our children die with us (PDEATHSIG)
                for req in self.frames.feed(data):
                    self.spawn(req)
            self.reap()


def main() -> None:
    from .worker import die_with_parent

    die_with_parent()
    set_child_subreaper()  # orphans of exited trials come to us, to be killed
    fd = int(sys.argv[1])
    trainable_path, sys_path = sys.argv[2], sys.argv[3:]
    sock = socket.socket(fileno=fd)
    try:
        preload(trainable_path, sys_path)
        reason = cuda_initialised()
    except BaseException as exc:
        reason = f"loading the trainable failed: {type(exc).__name__}: {exc}"
    if reason:
        sock.sendall(encode(Refuse(reason=reason)))
        return
    gc.collect()
    gc.freeze()  # the collector never walks (and so never copies) the preloaded objects
    zygote = Zygote(sock)
    zygote.send(Ready(pid=os.getpid()))
    zygote.serve()


if __name__ == "__main__":
    main()
