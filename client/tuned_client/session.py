"""The in-trial side: ``tune.report``, ``tune.get_checkpoint``, ``tune.get_context``.

A trial process talks to the daemon over its own connection (the daemon tells
it where and who it is through ``TUNED_SOCKET``, ``TUNED_TRIAL_ID`` and
``TUNED_TRIAL_TOKEN``). Function trials get their session from the worker
runtime; command trials get one lazily on their first ``tune.report``.

Reports are pipelined: ``report`` returns as soon as the frame is sent. The
daemon acknowledges only the reports whose answer matters (a checkpoint, which
``report`` waits for, or a request to stop), and the end of the trial waits for
the daemon's answer to ``TrialExit``, which comes after every report before it,
so nothing a trial reported is lost when it exits. When the experiment's client
decides on each result (a scheduler, a searcher, a stop function: the
assignment says ``decide``), ``report`` waits for that decision, as a Ray
trial does.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import trust
from .checkpoint import Checkpoint, copy_tree
from .framing import (
    HEADER,
    ConnectionClosed,
    decode_message,
    encode_frame,
    read_frame,
    send_message,
)
from .protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Assignment,
    Error,
    Ok,
    Report,
    ReportAck,
    TrialExit,
    WorkerHello,
    as_number,
    pack_metrics,
    unpack_user,
)

# Keys Ray Tune fills in on every result; users' scripts read them.
TRAINING_ITERATION = "training_iteration"
# Where Ray records a bare value a trainable reports, returns or yields.
DEFAULT_METRIC = "_metric"


class StopTrial(BaseException):
    """Raised inside ``tune.report`` when the trial must end (stop rule, cancel, scheduler).

    A BaseException so that a trainable's ``except Exception`` does not swallow it.
    """


_MISSING: Any = object()


def flat_get(row: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """``row[key]``, where ``a/b/c`` also reaches into nested dicts (Ray flattens
    results with ``/`` for stop criteria and metrics)."""
    if key in row:
        return row[key]
    node: Any = row
    for part in key.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


class TrialResources(Sequence[dict[str, float]]):
    """The trial's bundles, read as Ray's ``PlacementGroupFactory`` is read
    (``bundles``, ``head_cpus``, ``required_resources``) and as a list of them.
    Reported as a metric, it stays this object (pickled, as Ray keeps its own)."""

    strategy = "PACK"

    def __init__(self, bundles: Iterable[dict[str, float]]) -> None:
        self._bundles = [dict(b) for b in bundles]

    def __getitem__(self, index: Any) -> Any:
        return self._bundles[index]

    def __len__(self) -> int:
        return len(self._bundles)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TrialResources):
            return self._bundles == other._bundles
        return isinstance(other, list) and self._bundles == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<PlacementGroupFactory (bundles={self._bundles}, strategy=PACK)>"

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [dict(b) for b in self._bundles]

    @property
    def head_cpus(self) -> float:
        head = self._bundles[0] if self._bundles else {}
        return float(head.get("CPU", head.get("cpu", 0.0)))

    @property
    def required_resources(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for bundle in self._bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + float(value)
        return total


class TrialContext:
    """What ``tune.get_context()`` returns, named as Ray's ``TuneContext``."""

    def __init__(self, assignment: Assignment) -> None:
        self._a = assignment

    def get_trial_id(self) -> str:
        return self._a.trial_id

    def get_trial_name(self) -> str:
        return self._a.trial_name

    def get_trial_dir(self) -> str:
        return self._a.trial_dir

    def get_experiment_name(self) -> str:
        return Path(self._a.experiment_dir).name

    def get_trial_resources(self) -> TrialResources:
        return TrialResources(self._a.resources)

    def get_world_rank(self) -> int:
        return 0

    def get_local_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1


class Session:
    """One trial attempt's channel to the daemon."""

    def __init__(self, sock: socket.socket, assignment: Assignment) -> None:
        self.sock = sock
        self.assignment = assignment
        self.tag = assignment.tag
        self.iteration = assignment.iteration
        self.time_offset = assignment.time_total_s
        self.started = time.monotonic()
        self.last_report = self.started
        self.sent = 0
        self.acked = 0
        self.stop_requested = False
        self.checkpoint_index = (
            assignment.checkpoint_index
            if assignment.checkpoint_index >= 0
            else _next_checkpoint_index(Path(assignment.trial_dir))
        )
        self.hostname = socket.gethostname()

    @classmethod
    def connect(cls, socket_path: str, trial_id: str, token: str) -> Session:
        hello = WorkerHello(protocol=PROTOCOL_VERSION, trial_id=trial_id, token=token)
        sock, reply = handshake(socket_path, hello)
        if isinstance(reply, Error):
            sock.close()
            raise RuntimeError(f"tuned refused this trial: {reply.message}")
        if not isinstance(reply, Assignment):
            sock.close()
            raise RuntimeError(f"unexpected reply from tuned: {type(reply).__name__}")
        return cls(sock, reply)

    # ------------------------------------------------------------ reporting

    def report(
        self, metrics: dict[str, Any], checkpoint: Checkpoint | None = None, *, done: bool = False
    ) -> None:
        if not isinstance(metrics, dict):
            raise TypeError(f"tune.report expects a dict of metrics, got {type(metrics).__name__}")
        now = time.monotonic()
        self.iteration += 1
        row = dict(metrics)
        cp_path = ""
        if checkpoint is not None:
            cp_path = self._persist_checkpoint(checkpoint)
        elapsed = now - self.started
        row.update(
            timestamp=int(time.time()),
            checkpoint_dir_name=Path(cp_path).name if cp_path else None,
            done=done,
            training_iteration=self.iteration,
            trial_id=self.assignment.trial_id,
            date=time.strftime("%Y-%m-%d_%H-%M-%S"),
            time_this_iter_s=now - self.last_report,
            time_total_s=self.time_offset + elapsed,
            pid=os.getpid(),
            hostname=self.hostname,
            node_ip="127.0.0.1",
            time_since_restore=elapsed,
            iterations_since_restore=self.iteration - self.assignment.iteration,
            experiment_tag=self.tag,
        )
        wait = self.assignment.decide and not done
        report = Report(seq=self.sent + 1, metrics=pack_metrics(row), checkpoint=cp_path, wait=wait)
        frame = encode_frame(report)
        if len(frame) - HEADER.size > MAX_FRAME_BYTES:
            self.iteration -= 1  # not sent: the trial may catch this and report again
            raise ValueError(
                f"tune.report: this result is {len(frame):,} bytes once encoded, over the "
                f"{MAX_FRAME_BYTES:,}-byte limit of one message to the daemon; keep large "
                "objects (arrays, models, images) in a checkpoint, not in the metrics"
            )
        self.last_report = now
        self.sent += 1
        self.sock.sendall(frame)
        if cp_path or wait:
            self._wait_acks(self.sent)
        else:
            self._drain_acks()
        if self.stop_requested or self._stop_rule_met(row):
            raise StopTrial()

    def _stop_rule_met(self, row: dict[str, Any]) -> bool:
        for key, bound in self.assignment.stop.items():
            value = as_number(flat_get(row, key))  # a numpy or torch scalar counts too
            if value is not None and value >= bound:
                return True
        return False

    def _persist_checkpoint(self, checkpoint: Checkpoint) -> str:
        """Copy the user's folder into the trial dir atomically (tmp name, then rename)."""
        trial_dir = Path(self.assignment.trial_dir)
        final = trial_dir / f"checkpoint_{self.checkpoint_index:06d}"
        tmp = trial_dir / f".tmp_{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        copy_tree(checkpoint.path, tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.checkpoint_index += 1
        return str(final)

    def _handle(self, body: bytes) -> None:
        msg = decode_message(body)
        if isinstance(msg, ReportAck):
            self.acked = max(self.acked, msg.seq)
            self.stop_requested = self.stop_requested or msg.stop
        elif isinstance(msg, Ok):
            pass
        elif isinstance(msg, Error):
            raise RuntimeError(f"tuned: {msg.message}")

    def _drain_acks(self) -> None:
        """Handle what the daemon has sent so far, without waiting.

        A peek (one system call, none to switch the socket's mode) says whether
        anything waits; the daemon writes each frame whole, so once its first
        byte is there the blocking read of the rest does not wait on the daemon
        (and at end of file the read raises ``ConnectionClosed``).
        """
        while True:
            try:
                self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            self._handle(read_frame(self.sock))

    def _wait_acks(self, seq: int) -> None:
        while self.acked < seq:
            self._handle(read_frame(self.sock))

    def finish(self, ok: bool, error: str = "", tb: str = "", stopped: bool = False) -> None:
        """Tell the daemon how the attempt ended, once every report is on disk."""
        try:
            send_message(self.sock, TrialExit(ok=ok, error=error, traceback=tb, stopped=stopped))
            while True:
                msg = decode_message(read_frame(self.sock))
                if isinstance(msg, Ok):
                    return
                if isinstance(msg, ReportAck):
                    self.acked = max(self.acked, msg.seq)
        except (ConnectionClosed, OSError):
            return

    # ------------------------------------------------------------ checkpoints, context

    def get_checkpoint(self) -> Checkpoint | None:
        path = self.assignment.checkpoint
        return Checkpoint(path) if path else None

    def config(self) -> Any:
        return unpack_user(self.assignment.config)


def handshake(socket_path: str, hello: Any) -> tuple[socket.socket, Any]:
    """Connect, send ``hello``, and return the socket with the daemon's first reply."""
    for attempt in range(5):
        sock = connect_patiently(socket_path)
        try:
            send_message(sock, hello)
            return sock, decode_message(read_frame(sock))
        except (ConnectionResetError, BrokenPipeError, ConnectionClosed):
            # Seen about once in a thousand trials under heavy load: the connection
            # dropped before the daemon read our hello. Nothing was assigned yet.
            sock.close()
            if attempt == 4:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def connect_patiently(path: str, attempts: int = 50) -> socket.socket:
    """Connect to the daemon, riding out a full listen backlog under heavy load.

    A Unix socket refuses with EAGAIN when its backlog is full; a trial must not
    die of that, so it backs off (1 ms, doubling, up to 0.2 s) and tries again.
    """
    delay = 0.001
    for attempt in range(attempts):
        try:
            return trust.connect(path)  # the daemon's own socket, or nobody's: never a squatter
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    raise AssertionError("unreachable")


def _next_checkpoint_index(trial_dir: Path) -> int:
    best = -1
    if trial_dir.is_dir():
        for entry in trial_dir.iterdir():
            name = entry.name
            if name.startswith("checkpoint_") and name[11:].isdigit():
                best = max(best, int(name[11:]))
    return best + 1


_current: Session | None = None


def set_session(session: Session | None) -> None:
    global _current
    _current = session


def current_session() -> Session | None:
    """The trial's session; a command trial connects on first use."""
    global _current
    if _current is None and os.environ.get("TUNED_TRIAL_TOKEN"):
        _current = Session.connect(
            os.environ["TUNED_SOCKET"],
            os.environ["TUNED_TRIAL_ID"],
            os.environ["TUNED_TRIAL_TOKEN"],
        )
        import atexit

        atexit.register(_current.finish, True)
    return _current


def require_session(what: str) -> Session:
    session = current_session()
    if session is None:
        raise RuntimeError(
            f"tune.{what}() was called outside of a trial: call it from the trainable that "
            "the Tuner runs (or from a command submitted with `tuned submit`)."
        )
    return session
