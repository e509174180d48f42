"""What ``status``, ``ls`` and ``cancel`` print: tables for people, JSON for scripts."""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonError

from .summary import ExperimentSummary, Fold, TrialSummary, best_line, duration, short

Requester = Callable[[argparse.Namespace, Any], Any]
ORDER = ("RUNNING", "PENDING", "TERMINATED", "ERROR")


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(width * min(max(fraction, 0.0), 1.0))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces, as ``squeue`` and ``pueue`` print."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def wrapped(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int = 80, keep: int = 1
) -> list[str]:
    """``table`` cut into blocks of columns that fit ``width``, as pandas prints a wide frame.

    The first ``keep`` columns (the trial id) begin every block, so each line
    still says whose values it holds; nothing is dropped, however many metrics.
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lead = sum(widths[:keep]) + 2 * keep
    blocks: list[list[int]] = []
    used = width
    for i in range(keep, len(headers)):
        if not blocks or used + widths[i] > width:
            blocks.append([])
            used = lead
        blocks[-1].append(i)
        used += widths[i] + 2
    lines: list[str] = []
    for n, block in enumerate(blocks or [[]]):
        cols = list(range(keep)) + block
        if n:
            lines.append("")
        lines += table([headers[i] for i in cols], [[r[i] for i in cols] for r in rows])
    return [line[:width] for line in lines]


def terminal_width() -> int:
    """The terminal's columns (``COLUMNS`` first); 80 when stdout is not a terminal."""
    return max(shutil.get_terminal_size((80, 24)).columns, 40)


def trial_table(exp: ExperimentSummary, trials: Sequence[TrialSummary], width: int) -> list[str]:
    """Trials with their varying config and the last value of every metric, in ``width``."""
    keys = varying_keys([t.config for t in exp.trials.values()])
    metrics = exp.metric_names()
    headers = ["TRIAL", "STATUS", *keys, "ITER", *metrics]
    rows = [
        [
            t.trial_id,
            t.status,
            *(short(t.config.get(k, "")) for k in keys),
            str(t.iteration or ""),
            *(short(t.last[m]) if m in t.last else "" for m in metrics),
        ]
        for t in trials
    ]
    return wrapped(headers, rows, width, keep=1)


def varying_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Config keys whose values differ between trials (all of them for a single trial)."""
    keys: dict[str, None] = {}
    for c in configs:
        keys.update(dict.fromkeys(c))
    if len(configs) <= 1:
        return list(keys)
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def experiment_lines(exp: ExperimentSummary, now: float, width: int) -> list[str]:
    """One active experiment: progress, ETA, the best trial, its running trials' results."""
    total, done = exp.total, exp.done()
    head = f"{exp.experiment_id} {exp.name}: {done}/{total} done, ETA {duration(exp.eta(now))}"
    lines = [head[:width]]
    best = best_line(exp, width - 2)
    if best:
        lines.append("  " + best)
    running = [t for t in exp.trials.values() if t.status == "RUNNING"]
    if running:
        lines += [f"  {x}" if x else "" for x in trial_table(exp, running, width - 2)]
    return lines


def counts_text(counts: dict[str, int]) -> str:
    names = [s for s in ORDER if counts.get(s)] + sorted(set(counts) - set(ORDER))
    return ", ".join(f"{counts[s]} {s}" for s in names) or "no trials"


def _resources(res: dict[str, float]) -> str:
    return " ".join(f"{k}={_bytes(v) if k == 'memory' else f'{v:g}'}" for k, v in res.items())


def status_lines(
    reply: p.StatusReply,
    now: float,
    active: Sequence[ExperimentSummary] = (),
    width: int = 80,
) -> list[str]:
    """The daemon, its resources and experiments; then each of ``active`` in detail."""
    lines = [
        f"tuned {reply.version}  pid {reply.pid}  up {duration(now - reply.started_at)}",
        f"socket {reply.socket}  state {reply.state_dir}",
        "",
        "Resources",
    ]
    for r in reply.resources:
        frac = r.used / r.total if r.total else 0.0
        if r.name == "memory":
            amount = f"{_bytes(r.used)} / {_bytes(r.total)}"
        else:
            amount = f"{r.used:g} / {r.total:g}"
        lines.append(f"  {r.name:<8} {_bar(frac)} {amount}")
    for g in reply.gpus:
        mem = ""
        if g.memory_total:
            mem = f"  memory {_bytes(g.memory_used)} / {_bytes(g.memory_total)}"
        label = f"gpu {g.id}" + (f" {g.name}" if g.name else "")
        lines.append(f"  {label:<8} {_bar(g.used)} {g.used:.2f} allocated{mem}")
    lines.append("")
    if reply.experiments:
        lines.append("Experiments")
        rows = [
            [
                e.experiment_id,
                short(e.name, 24),
                experiment_state(e),
                _eta(e, now),
                counts_text(e.counts),
            ]
            for e in reply.experiments
        ]
        headers = ["ID", "NAME", "STATE", "ETA", "TRIALS"]
        lines += [f"  {x}" if x else "" for x in wrapped(headers, rows, width - 2)]
    else:
        lines.append("No experiments.")
    if reply.running:
        lines += ["", "Running trials"]
        rows = [
            [
                t.trial_id,
                str(t.pid),
                _resources(t.resources),
                t.gpu_ids or "-",
                duration(now - t.started_at),
                str(t.iteration),
                f"{t.cpu_percent:.0f}%",
                _bytes(t.rss),
                _bytes(t.gpu_memory) if t.gpu_memory else "-",
            ]
            for t in reply.running
        ]
        headers = ["TRIAL", "PID", "RESOURCES", "GPUS", "ELAPSED", "ITER", "CPU", "RSS", "GPU MEM"]
        lines += [f"  {x}" if x else "" for x in wrapped(headers, rows, width - 2)]
    for exp in active:
        lines += ["", *experiment_lines(exp, now, width)]
    return [line[:width] for line in lines]


def _eta(e: p.ExperimentRow, now: float) -> str:
    """From the counts alone: the pace finished trials have kept since it was accepted."""
    if e.finished:
        return "-"
    total = sum(e.counts.values())
    done = e.counts.get("TERMINATED", 0) + e.counts.get("ERROR", 0)
    if not done or not e.started_at:
        return "?"
    return duration((now - e.started_at) * (total - done) / done)


def status(args: argparse.Namespace, request: Requester) -> int:
    reply: p.StatusReply = request(args, p.GetStatus())
    if args.json:
        print(msgspec.json.encode(reply).decode())
        return 0
    fold = Fold()
    unfinished = [e.experiment_id for e in reply.experiments if not e.finished]
    if unfinished:
        with Connection.open(args.socket, autostart=False, client="tuned-cli") as conn:
            for exp_id in unfinished:
                try:
                    fold.add_reply(conn.get_experiment(exp_id))
                except DaemonError:
                    continue  # it ended and was forgotten between the two requests
    active = list(fold.experiments.values())
    print("\n".join(status_lines(reply, time.time(), active, terminal_width())))
    return 0


def ls(args: argparse.Namespace, request: Requester) -> int:
    reply: p.StatusReply = request(args, p.GetStatus())
    if args.json:
        print(msgspec.json.encode(reply.experiments).decode())
        return 0
    if not reply.experiments:
        print("No experiments.")
        return 0
    rows = []
    for e in reply.experiments:
        total = sum(e.counts.values())
        done = e.counts.get("TERMINATED", 0) + e.counts.get("ERROR", 0)
        state = experiment_state(e)
        rows.append([e.experiment_id, e.name, state, f"{done}/{total}", e.path])
    print("\n".join(table(["ID", "NAME", "STATE", "DONE", "PATH"], rows)))
    return 0


def cancel(args: argparse.Namespace, request: Requester) -> int:
    for target in args.target:
        request(args, p.Cancel(target=target))
        print(f"cancelled {target}")
    return 0


def experiment_state(e: p.ExperimentRow) -> str:
    """active, finished, or interrupted (its script went away: ``Tuner.restore`` resumes it)."""
    if e.interrupted:
        return "interrupted"
    return "finished" if e.finished else "active"
