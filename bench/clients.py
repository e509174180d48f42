"""What the benchmarks run against a daemon: user scripts, raw subscribers, polls.

A user script runs in its own interpreter (``python -c CODE ARGS``) with the
daemon's environment, as a user's would; lines ``KEY value`` on its stdout are
its figures. A raw subscriber is a plain ``tuned_client.connection`` socket
that subscribes and counts (and decodes) the frames it receives.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psutil
from tuned_client import protocol as p
from tuned_client.connection import Connection
from tuned_client.framing import HEADER, decode_message

from .daemon import BenchDaemon


def start_script(
    d: BenchDaemon, code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**d.env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_script(proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, str]:
    """Wait for a script; its ``KEY value`` lines, or an error with its output."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"a bench script failed ({proc.returncode}):\n{out}\n{err[-3000:]}")
    figures: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key.isupper() and value:
            figures[key] = value
    return figures


def run_script(
    d: BenchDaemon, code: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, str]:
    return finish_script(start_script(d, code, *args, env=env))


def request(d: BenchDaemon, message: object) -> p.Message:
    with Connection.open(d.socket, autostart=False) as conn:
        return conn.request(message)


def finished_trials(d: BenchDaemon) -> tuple[int, int]:
    """(finished, total) trials over every experiment, from ``tuned status``'s reply."""
    reply = request(d, p.GetStatus())
    assert isinstance(reply, p.StatusReply)
    done = total = 0
    for exp in reply.experiments:
        total += sum(exp.counts.values())
        done += exp.counts.get("TERMINATED", 0) + exp.counts.get("ERROR", 0)
    return done, total


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


class RawSubscriber(threading.Thread):
    """Subscribes to every experiment and decodes what arrives, in a thread.

    ``times`` holds (receive time, events so far) after each read, so a rate
    can be taken over any part of the stream.
    """

    def __init__(self, d: BenchDaemon, experiment_id: str = "") -> None:
        super().__init__(daemon=True)
        self.conn = Connection.open(d.socket, autostart=False)
        self.conn.send(p.Subscribe(experiment_id=experiment_id, since=-1))
        self.events = 0
        self.kinds: dict[str, int] = {}
        self.first = 0.0
        self.last = 0.0
        self.stopping = False

    def run(self) -> None:
        sock = self.conn.sock
        sock.settimeout(0.2)
        buf = bytearray()
        while not self.stopping:
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            buf += data
            pos = 0
            while len(buf) - pos >= HEADER.size:
                (length,) = HEADER.unpack_from(buf, pos)
                end = pos + HEADER.size + length
                if end > len(buf):
                    break
                msg = decode_message(bytes(buf[pos + HEADER.size : end]))  # Raw fields keep it
                name = type(msg).__name__
                self.kinds[name] = self.kinds.get(name, 0) + 1
                if isinstance(msg, p.Event):
                    self.events += 1
                pos = end
            del buf[:pos]
            if not self.first:
                self.first = now
            self.last = now

    def count(self, kind: type) -> int:
        if not self.is_alive() and not self.stopping:
            raise RuntimeError("the subscriber stopped (the daemon closed it, or it failed)")
        return self.kinds.get(kind.__name__, 0)

    def close(self) -> None:
        self.stopping = True
        self.join(timeout=2)
        self.conn.close()


# A process holding ``N`` subscriber connections that drain everything they get:
# the daemon caps connections per client process, so 100 subscribers are 4 x 25.
SUBSCRIBERS = """
import selectors, signal, sys
from tuned_client import protocol as p
from tuned_client.connection import Connection
conns = [Connection.open(sys.argv[1], autostart=False) for _ in range(int(sys.argv[2]))]
sel = selectors.DefaultSelector()
for c in conns:
    c.send(p.Subscribe(experiment_id="", since=-1))
    c.sock.setblocking(False)
    sel.register(c.sock, selectors.EVENT_READ)
received = 0
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
print("READY", flush=True)
while not stop:
    for key, _ in sel.select(0.2):
        try:
            data = key.fileobj.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            sel.unregister(key.fileobj)
        received += len(data)
print(f"RECEIVED {received}", flush=True)
"""


class SubscriberCrowd:
    """``count`` subscriber connections, in processes of at most 25 each."""

    def __init__(self, d: BenchDaemon, count: int, per_process: int = 25) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        left = count
        while left > 0:
            n = min(per_process, left)
            self.procs.append(start_script(d, SUBSCRIBERS, str(d.socket), str(n)))
            left -= n
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                self.stop()
                raise RuntimeError("a subscriber process did not start")

    def stop(self) -> int:
        """Stop them; the bytes they received in all."""
        total = 0
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                continue
            for line in out.splitlines():
                if line.startswith("RECEIVED "):
                    total += int(line.split()[1])
        return total


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
