"""The ``== Status ==`` block Ray Tune users know, printed while ``fit()`` runs.

It is redrawn at most every ``interval`` seconds and only when something
changed, then once at the end, so a long experiment never floods the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..protocol import unpack_user
from .result import TrialFolder, unpack_metrics

MAX_ROWS = 20


class TrialView(TrialFolder):
    """What the client knows about one trial, built from the event stream.

    ``fit()`` keeps one per trial until it returns, so a finished trial keeps
    only what its Result, the status table and callbacks read, compactly: its
    last result as the packed bytes the daemon sent (exact, decoded on each
    read; about a third of a decoded dict), its folder as a leaf name under a
    parent string every trial shares, and no resources (only running trials
    count towards the "Resources requested" line).
    """

    __slots__ = (
        "_packed",
        "_resources",
        "_result",
        "checkpoint",
        "config",
        "error",
        "name",
        "pid",
        "status",
        "tag",
        "traceback",
        "trial_id",
    )
    _packed: bytes | None  # the last result as the daemon packed it
    _result: dict[str, Any] | None  # ... and decoded, while the trial is live
    _resources: dict[str, float] | None  # what it holds while it runs

    def __init__(
        self,
        trial_id: str,
        name: str,
        tag: str,
        config: dict[str, Any],
        status: str = "PENDING",
        pid: int = 0,
        path: str = "",
        last_result: dict[str, Any] | None = None,
        error: str = "",
        traceback: str = "",
        checkpoint: str = "",
        resources: dict[str, float] | None = None,
    ) -> None:
        self.trial_id = trial_id
        self.name = name
        self.tag = tag
        self.config = config
        self.status = status
        self.pid = pid
        self.path = path
        self.last_result = last_result
        self.error = error
        self.traceback = traceback
        self.checkpoint = checkpoint
        self.resources = resources

    @property
    def resources(self) -> dict[str, float]:
        return self._resources if self._resources is not None else {}

    @resources.setter
    def resources(self, value: dict[str, float] | None) -> None:
        self._resources = value or None

    @property
    def last_result(self) -> dict[str, Any] | None:
        """The last reported metrics (``done`` is True once the trial has terminated)."""
        if self._result is not None or self._packed is None:
            return self._result
        return unpack_metrics(self._packed, self.status)

    @last_result.setter
    def last_result(self, value: dict[str, Any] | None) -> None:
        self._result, self._packed = value, None

    def set_packed_result(self, packed: bytes) -> None:
        """A new result as the daemon packed it; decoded now if the trial still runs."""
        self._packed = packed
        self._result = None if self.finished else unpack_user(packed)

    def packed_result(self) -> bytes | None:
        """The last result, still packed, when that is all the view keeps (it has finished)."""
        return self._packed if self._result is None else None

    @property
    def finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")

    def finish(self, status: str, error: str, traceback: str) -> None:
        """The trial ended: keep its last result packed, drop what only a live trial needs."""
        self.status, self.error, self.traceback = status, error, traceback
        self._resources = None
        if self._packed is not None:
            self._result = None
        elif self._result is not None and status == "TERMINATED":  # set by hand, not by events
            self._result["done"] = True

    def __repr__(self) -> str:
        return self.name  # as Ray's Trial prints


def _memory_line() -> str:
    try:
        info: dict[str, int] = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
        total = info["MemTotal"]
        used = total - info.get("MemAvailable", info.get("MemFree", 0))
        return f"Memory usage on this node: {used / 1024**3:.1f}/{total / 1024**3:.1f} GiB"
    except (OSError, KeyError, ValueError):
        return "Memory usage on this node: unknown"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _elapsed(seconds: float) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:05.2f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    mid = "|" + "+".join("-" * (w + 2) for w in widths) + "|"

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [sep, line(headers), mid, *(line(r) for r in rows), sep]


def varying_keys(trials: Sequence[TrialView]) -> list[str]:
    """Config keys whose values differ between trials: the ones worth a column."""
    keys: list[str] = []
    for t in trials:
        for k in t.config:
            if k not in keys:
                keys.append(k)
    if len(trials) <= 1:
        return keys[:4]
    return [k for k in keys if len({repr(t.config.get(k)) for t in trials}) > 1][:4]


def render(
    trials: Sequence[TrialView],
    *,
    started: float,
    logdir: str,
    capacity: dict[str, float],
    scheduler: str = "FIFO",
    metric: str | None = None,
) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    used_cpu = sum(t.resources.get("cpu", 0.0) for t in trials if t.status == "RUNNING")
    used_gpu = sum(t.resources.get("gpu", 0.0) for t in trials if t.status == "RUNNING")
    now = time.time()
    state = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [
        "== Status ==",
        f"Current time: {time.strftime('%Y-%m-%d %H:%M:%S')} "
        f"(running for {_elapsed(now - started)})",
        _memory_line(),
        f"Using {scheduler} scheduling algorithm.",
        f"Resources requested: {used_cpu:g}/{capacity.get('cpu', 0):g} CPUs, "
        f"{used_gpu:g}/{capacity.get('gpu', 0):g} GPUs",
        f"Result logdir: {logdir}",
        f"Number of trials: {len(trials)}/{len(trials)} ({state})",
    ]
    keys = varying_keys(trials)
    extra = [metric] if metric else []
    headers = ["Trial name", "status", "loc", *keys, *extra, "iter", "total time (s)"]
    shown = list(trials)
    hidden = 0
    if len(shown) > MAX_ROWS:
        hidden = len(shown) - MAX_ROWS
        shown = shown[: MAX_ROWS // 2] + shown[-MAX_ROWS // 2 :]
    rows = []
    for t in shown:
        r = t.last_result or {}
        rows.append(
            [
                t.name,
                t.status,
                f"127.0.0.1:{t.pid}" if t.pid else "",
                *(_fmt(t.config.get(k, "")) for k in keys),
                *(_fmt(r.get(m, "")) for m in extra),
                _fmt(r.get("training_iteration", "")),
                _fmt(r.get("time_total_s", "")),
            ]
        )
    lines += _table(headers, rows)
    if hidden:
        lines.append(f"... {hidden} more trials not shown")
    return "\n".join(lines) + "\n"


class Reporter:
    """Decides when to redraw; writes to the given stream."""

    def __init__(self, out: TextIO, verbose: int, interval: float = 5.0) -> None:
        self.out = out
        self.verbose = verbose
        self.interval = interval
        self.last = 0.0
        self.dirty = False

    def changed(self) -> None:
        self.dirty = True

    def maybe_print(self, text_fn: Any, *, final: bool = False) -> None:
        if self.verbose <= 0:
            return
        now = time.monotonic()
        if final or (self.dirty and now - self.last >= self.interval):
            self.out.write(text_fn() + "\n")
            self.out.flush()
            self.last = now
            self.dirty = False
