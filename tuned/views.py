"""What the CLI prints: daemon status, experiments, cancellations."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
from tuned_client import protocol as p

Requester = Callable[[argparse.Namespace, Any], Any]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def status(args: argparse.Namespace, request: Requester) -> int:
    reply: p.StatusReply = request(args, p.GetStatus())
    if args.json:
        print(msgspec.json.encode(reply).decode())
        return 0
    print(
        f"tuned {reply.version}  pid {reply.pid}  up {_duration(time.time() - reply.started_at)}"
        f"  socket {reply.socket}"
    )
    print("Resources:")
    for r in reply.resources:
        if r.name == "memory":
            print(f"  memory  {_gib(int(r.used))} / {_gib(int(r.total))}")
        else:
            print(f"  {r.name:<7} {r.used:g} / {r.total:g}")
    for g in reply.gpus:
        mem = f"  {_gib(g.memory_used)} / {_gib(g.memory_total)}" if g.memory_total else ""
        print(f"  gpu {g.id}: {g.used:.2f} allocated{mem}")
    print("Experiments:" if reply.experiments else "No experiments.")
    for e in reply.experiments:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(e.counts.items()))
        state = "finished" if e.finished else "active"
        print(f"  {e.experiment_id}  {e.name}  {state}  ({counts})")
    if reply.running:
        print("Running trials:")
        now = time.time()
        for t in reply.running:
            res = ", ".join(f"{k}={v:g}" for k, v in t.resources.items())
            print(
                f"  {t.trial_id}  pid {t.pid}  {_duration(now - t.started_at)}  [{res}]"
                + (f"  gpus {t.gpu_ids}" if t.gpu_ids else "")
                + f"  iter {t.iteration}"
            )
    return 0


def ls(args: argparse.Namespace, request: Requester) -> int:
    reply: p.StatusReply = request(args, p.GetStatus())
    if args.json:
        print(msgspec.json.encode(reply.experiments).decode())
        return 0
    for e in reply.experiments:
        total = sum(e.counts.values())
        done = e.counts.get("TERMINATED", 0) + e.counts.get("ERROR", 0)
        print(f"{e.experiment_id}  {e.name:<30} {done}/{total} done  {e.path}")
    return 0


def cancel(args: argparse.Namespace, request: Requester) -> int:
    request(args, p.Cancel(target=args.target))
    print(f"cancelled {args.target}")
    return 0


def dumps(obj: Any) -> str:
    return json.dumps(obj)
