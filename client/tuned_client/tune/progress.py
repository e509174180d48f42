"""The ``== Status ==`` block of Ray Tune's ``CLIReporter`` (its older console).

``fit()`` prints it when given a ``progress_reporter`` (``progress_reporter``
module); ``tuned tail`` draws its live view with it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .trial import TrialView

__all__ = ["MAX_ROWS", "TrialView", "render", "varying_keys"]

MAX_ROWS = 20


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
    parameter_columns: dict[str, str] | None = None,
    metric_columns: dict[str, str] | None = None,
    max_rows: int = MAX_ROWS,
    best_line: str = "",
    scheduler_line: str = "",
    total_samples: int = 0,
) -> str:
    """The block; the keyword options are ``CLIReporter``'s (columns, rows, best trial)."""
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
        scheduler_line or f"Using {scheduler} scheduling algorithm.",
        f"Logical resource usage: {used_cpu:g}/{capacity.get('cpu', 0):g} CPUs, "
        f"{used_gpu:g}/{capacity.get('gpu', 0):g} GPUs",
        *([best_line] if best_line else []),
        f"Result logdir: {logdir}",
        f"Number of trials: {len(trials)}/{max(total_samples, len(trials))} ({state})",
    ]
    params = parameter_columns or {k: k for k in varying_keys(trials)}
    keys = list(params)
    if metric_columns is not None:
        extra = [m for m in metric_columns if m not in ("training_iteration", "time_total_s")]
    else:
        extra = [metric] if metric else []
    names = {**(metric_columns or {})}
    headers = [
        "Trial name",
        "status",
        "loc",
        *(params[k] for k in keys),
        *(names.get(m, m) for m in extra),
        "iter",
        "total time (s)",
    ]
    shown = list(trials)
    hidden = 0
    if len(shown) > max_rows:
        hidden = len(shown) - max_rows
        shown = shown[: max_rows // 2] + shown[-(max_rows - max_rows // 2) :]
    rows = []
    for t in shown:
        r = t.last_result or {}
        rows.append(
            [
                str(t),
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
