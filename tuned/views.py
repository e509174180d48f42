"""What ``status``, ``ls`` and ``cancel`` print: tables for people, JSON for scripts."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from tuned_client import protocol as p

Requester = Callable[[argparse.Namespace, Any], Any]
ORDER = ("RUNNING", "PENDING", "TERMINATED", "ERROR")


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


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
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def counts_text(counts: dict[str, int]) -> str:
    names = [s for s in ORDER if counts.get(s)] + sorted(set(counts) - set(ORDER))
    return ", ".join(f"{counts[s]} {s}" for s in names) or "no trials"


def _resources(res: dict[str, float]) -> str:
    return " ".join(f"{k}={_bytes(v) if k == 'memory' else f'{v:g}'}" for k, v in res.items())


def status_lines(reply: p.StatusReply, now: float) -> list[str]:
    lines = [
        f"tuned {reply.version}  pid {reply.pid}  up {_duration(now - reply.started_at)}",
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
                e.name,
                "finished" if e.finished else "active",
                counts_text(e.counts),
            ]
            for e in reply.experiments
        ]
        lines += ["  " + x for x in table(["ID", "NAME", "STATE", "TRIALS"], rows)]
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
                _duration(now - t.started_at),
                str(t.iteration),
                f"{t.cpu_percent:.0f}%",
                _bytes(t.rss),
            ]
            for t in reply.running
        ]
        headers = ["TRIAL", "PID", "RESOURCES", "GPUS", "ELAPSED", "ITER", "CPU", "RSS"]
        lines += ["  " + x for x in table(headers, rows)]
    return lines


def status(args: argparse.Namespace, request: Requester) -> int:
    reply: p.StatusReply = request(args, p.GetStatus())
    if args.json:
        print(msgspec.json.encode(reply).decode())
        return 0
    print("\n".join(status_lines(reply, time.time())))
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
        state = "finished" if e.finished else "active"
        rows.append([e.experiment_id, e.name, state, f"{done}/{total}", e.path])
    print("\n".join(table(["ID", "NAME", "STATE", "DONE", "PATH"], rows)))
    return 0


def cancel(args: argparse.Namespace, request: Requester) -> int:
    for target in args.target:
        request(args, p.Cancel(target=target))
        print(f"cancelled {target}")
    return 0
