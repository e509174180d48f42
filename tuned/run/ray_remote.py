"""What runs inside the Ray cluster for the Ray executor (``tuned.run.ray_executor``).

Two pieces, both plain Python that Ray imports by module name on its workers
(so ``tuned`` must be installed on every node, as ``tuned_client`` must be for
the trials themselves):

* ``Relay``, an async actor pinned to the daemon's node. It opens connections
  to the daemon's Unix socket on behalf of trials on other nodes and moves
  bytes both ways. The daemon's wire protocol is unchanged: a remote trial is
  one more client of the socket, and Ray's own RPC carries the bytes.
* ``run_trial``, the body of the Ray task of one trial attempt. It checks the
  trial's folder is visible on this node (shared storage), listens on a
  private Unix socket that it tunnels through the relay, and runs the trial
  exactly as the local executor would: a child process in its own session,
  stdout and stderr straight to the trial's files, ``CUDA_VISIBLE_DEVICES`` as
  Ray assigned it. ``ray.cancel`` (a KeyboardInterrupt here) stops the whole
  process group: SIGTERM, a grace period, SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

CHUNK = 1 << 16


class SharedStorageError(RuntimeError):
    """The trial's folder is not on this node: storage_path is not shared."""


class Relay:
    """Byte tunnels from trials anywhere in the cluster to the daemon's Unix socket."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.conns: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.next_id = 0

    async def open(self) -> int:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=CHUNK)
        self.next_id += 1
        self.conns[self.next_id] = (reader, writer)
        return self.next_id

    async def send(self, cid: int, data: bytes) -> bool:
        conn = self.conns.get(cid)
        if conn is None:
            return False
        try:
            conn[1].write(data)
            await conn[1].drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def recv(self, cid: int) -> bytes:
        """The next bytes the daemon sent on this connection; b"" once it is closed."""
        conn = self.conns.get(cid)
        if conn is None:
            return b""
        try:
            return await conn[0].read(CHUNK)
        except (ConnectionError, OSError):
            return b""

    async def close(self, cid: int) -> None:
        conn = self.conns.pop(cid, None)
        if conn is not None:
            conn[1].close()

    async def ping(self) -> str:
        return self.socket_path


def _tunnel(local: socket.socket, relay: Any) -> None:
    """Carry one trial connection through the relay until either side closes it."""
    import ray

    cid = ray.get(relay.open.remote())

    def down() -> None:  # daemon -> trial
        try:
            while data := ray.get(relay.recv.remote(cid)):
                local.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            local.shutdown(socket.SHUT_RDWR)

    reader = threading.Thread(target=down, name=f"tuned-relay-down-{cid}", daemon=True)
    reader.start()
    try:
        while data := local.recv(CHUNK):  # trial -> daemon, in order: one call at a time
            if not ray.get(relay.send.remote(cid, data)):
                break
    except OSError:
        pass
    finally:
        ray.get(relay.close.remote(cid))
        reader.join()
        local.close()


def _serve(listener: socket.socket, relay: Any) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed: the trial is over
            return
        threading.Thread(target=_tunnel, args=(conn, relay), daemon=True).start()


def _die_with_parent() -> None:
    """In the child: SIGKILL it if the Ray worker running this task is killed."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_trial(launch: dict[str, Any], relay: Any, grace_s: float) -> int:
    """One trial attempt on whichever node Ray chose; returns the exit code."""
    import ray

    trial_dir = launch["trial_dir"]
    if not os.path.isdir(trial_dir):
        node = ray.util.get_node_ip_address()
        raise SharedStorageError(
            f"the trial folder {trial_dir} does not exist on node {node}: on a Ray cluster "
            "the experiment's storage_path must be shared storage (NFS or similar) mounted "
            "at the same path on every node"
        )
    env = dict(launch["env"])
    gpu_ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    env["TUNED_RAY_NODE"] = ray.get_runtime_context().get_node_id()
    argv = list(launch["argv"])
    if argv and not os.path.exists(argv[0]) and argv[0].endswith(("python", "python3")):
        argv[0] = sys.executable  # another node's interpreter lives elsewhere
    private = tempfile.mkdtemp(prefix="tuned-trial-")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(private, "s")
    listener.bind(path)
    listener.listen(64)
    env["TUNED_SOCKET"] = path
    cwd = launch["cwd"] if os.path.isdir(launch["cwd"]) else None
    try:
        with open(launch["stdout"], "ab") as out, open(launch["stderr"], "ab") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        threading.Thread(target=_serve, args=(listener, relay), daemon=True).start()
        try:
            return _wait_interruptibly(proc)
        except KeyboardInterrupt:  # ray.cancel: stop the whole group, gracefully first
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        finally:
            _signal_group(proc.pid, signal.SIGKILL)  # anything it left in its group
    finally:
        listener.close()
        shutil.rmtree(private, ignore_errors=True)


def _wait_interruptibly(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the trial, in Python code: ``ray.cancel`` raises its KeyboardInterrupt
    only between bytecodes, never inside a blocking waitpid."""
    while True:
        try:
            return proc.wait(timeout=0.5)  # polls every few ms up to 50 ms
        except subprocess.TimeoutExpired:
            continue
