"""A private local Ray cluster for the tests: its own temp dir and HOME, stopped alone.

``ray stop`` stops every Ray process of the user, so a test suite ending with it
takes down the clusters of whoever runs it on their workstation; and Ray reads
the user's ``~/.ray`` (an ``auth_token`` left by an earlier ``ray.init()`` makes
a fresh cluster refuse its own drivers). Here each node is ``ray start --block``
in a session of its own, with ``--temp-dir`` in the test's folder and the test's
HOME; stopping the cluster signals only the processes of those sessions (and any
that name its temp dir), never another Ray on the machine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import psutil

RAY = Path(sys.executable).with_name("ray")
# Ray's sockets live at <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store.1
# (".1" on a second node of this machine): up to 66 bytes below the temp dir, of the 107
# that a Unix socket's path may hold.
MAX_TEMP_DIR = 107 - 66


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayCluster:
    """Nodes started by us, in ``temp_dir``, with ``env`` (the test's HOME and TMPDIR)."""

    def __init__(self, temp_dir: Path, env: Mapping[str, str]) -> None:
        if len(str(temp_dir)) > MAX_TEMP_DIR:
            raise ValueError(f"{temp_dir} is too long for Ray's Unix sockets below it")
        self.temp_dir = temp_dir
        self.env = dict(env)
        self.nodes: list[subprocess.Popen[str]] = []
        self.output: list[str] = []
        self.address = ""

    def start_head(self, *args: str) -> str:
        port = free_port()
        self._start("--head", "--port", str(port), "--include-dashboard=false", *args)
        self.address = f"127.0.0.1:{port}"
        return self.address

    def add_node(self, *args: str) -> None:
        self._start("--address", self.address, *args)

    def _start(self, *args: str) -> None:
        node = subprocess.Popen(
            [str(RAY), "start", "--block", "--temp-dir", str(self.temp_dir),
             "--disable-usage-stats", *args],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.nodes.append(node)
        assert node.stdout is not None
        for line in node.stdout:  # blocks until Ray says it runs, or the command ends
            self.output.append(line)
            if "Ray runtime started" in line:
                break
        else:
            node.wait()
            raise RuntimeError("ray start failed:\n" + "".join(self.output))
        threading.Thread(target=self.output.extend, args=(node.stdout,), daemon=True).start()

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: in one of its nodes' sessions, or naming its temp dir."""
        sessions = {node.pid for node in self.nodes}
        ours = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc.pid == os.getpid():
                    continue
                if os.getsid(proc.pid) in sessions or str(self.temp_dir) in " ".join(
                    proc.info["cmdline"] or ()
                ):
                    ours.append(proc)
            except (OSError, psutil.Error):
                continue
        return ours

    def stop(self) -> None:
        """SIGTERM to this cluster's processes, SIGKILL to what is left after a grace."""
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, left = psutil.wait_procs(procs, timeout=15)
        for proc in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(left, timeout=10)
        for node in self.nodes:
            node.wait(timeout=10)
