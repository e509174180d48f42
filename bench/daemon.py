"""A private daemon per benchmark: its own socket, state and results in a temp dir.

Mirrors how the tests start one (``tuned start --foreground`` with a ready pipe)
without importing from ``tests``, and hands out the environment a user script
needs to find it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class BenchDaemon:
    base: Path
    socket: Path
    state_dir: Path
    storage: Path
    proc: subprocess.Popen[bytes] | None = None
    code: Path | None = None  # another source tree to run (``before_after``); None: this one

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.code is not None:  # its daemon and client, ahead of the installed ones
            env["PYTHONPATH"] = f"{self.code}{os.pathsep}{self.code / 'client'}"
        env.update(
            TUNED_SOCKET=str(self.socket),
            TUNED_STATE_DIR=str(self.state_dir),
            TUNED_STORAGE_PATH=str(self.storage),
        )
        return env

    @property
    def pid(self) -> int:
        if self.proc is not None:
            return self.proc.pid
        return int((self.state_dir / "tuned.pid").read_text())

    def start(self, *args: str) -> None:
        """Start ``tuned start --foreground`` and return once its socket accepts."""
        read_fd, write_fd = os.pipe()
        cmd = [
            sys.executable, "-m", "tuned", "start", "--foreground",
            "--socket", str(self.socket), "--state-dir", str(self.state_dir),
            "--ready-fd", str(write_fd), "--log-level", "warning", *args,
        ]  # fmt: skip
        with open(self.state_dir / "daemon.stderr", "ab") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=(write_fd,),
                env=self.env() if self.code is not None else None,
                cwd=self.code,
            )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as ready:
            if ready.read(1) != b"1":
                self.proc.wait(timeout=10)
                log = (self.state_dir / "daemon.stderr").read_text(errors="replace")
                raise RuntimeError(f"the daemon did not start:\n{log}")

    def stop(self) -> None:
        """Stop our daemon, or one a client auto-started on our socket."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=30)
            return
        try:
            pid = self.pid
            os.kill(pid, signal.SIGTERM)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # not our child: nothing to wait on but its pid
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)


# Deleting a benchmark's trial folders at once makes the next benchmark slower on
# some disks: ext4 without a journal (this VM's) skips inodes freed in the last
# 5 s (300 s while their blocks are dirty) when it allocates new ones, reading
# inode tables to find the others. The folders go when the whole run ends.
_leftovers: list[Path] = []


@atexit.register
def _remove_leftovers() -> None:
    for path in _leftovers:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def bench_daemon(*args: str, start: bool = True, code: Path | None = None) -> Iterator[BenchDaemon]:
    """A daemon in a fresh temp dir (``start=False``: only the paths, for a cold start).

    ``code``: run that source tree's daemon (and hand its clients that tree) instead.
    """
    base = Path(tempfile.mkdtemp(prefix="tuned-bench-"))
    sock_dir = Path(tempfile.mkdtemp(prefix="tb-", dir="/tmp"))  # short: AF_UNIX path limit
    d = BenchDaemon(base, sock_dir / "tuned.sock", base / "state", base / "results", code=code)
    d.state_dir.mkdir()
    try:
        if start:
            d.start(*args)
        yield d
    finally:
        d.stop()
        _leftovers.append(base)
        shutil.rmtree(sock_dir, ignore_errors=True)
