"""``tuned submit``: queue a shell command as a trial, or a grid of them.

A command trial gets the same ledger, supervision, retries, time limit, result
folder and events as a Python trainable. Its argv is a template: ``{lr}`` is
filled from the trial's config (one trial per combination of ``--grid``
values), by the daemon's supervisor. Only the names ``--grid`` defines are
placeholders: any other brace (a JSON argument, an awk program) passes through
as typed. It runs in the submitter's working
directory and environment; ``tune.report`` inside it reaches the daemon
through the ``TUNED_*`` variables the daemon sets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from tuned_client import protocol as p
from tuned_client.connection import Connection, DaemonError
from tuned_client.paths import default_storage_path

from ..store.results import safe_component


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--cpu", type=float, default=1.0, help="CPUs per trial (default 1)")
    cmd.add_argument("--gpu", type=float, default=0.0, help="GPUs per trial, 0.5 shares one")
    cmd.add_argument("--memory", type=int, default=0, help="bytes per trial (bookkeeping)")
    cmd.add_argument("--resources", default="{}", help="custom resources: '{\"name\": 1}'")
    cmd.add_argument("--timeout", type=float, default=0.0, help="seconds per attempt")
    cmd.add_argument("--retries", type=int, default=0, help="retries after a failure")
    cmd.add_argument("--name", default=None, help="experiment name (and trial name prefix)")
    cmd.add_argument("--storage-path", default=None, help="results root (~/tuned_results)")
    cmd.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="one trial per combination; {KEY} in the command is replaced (other braces stay)",
    )
    cmd.add_argument("--metric", default=None, help="the metric that ranks trials (best trial)")
    cmd.add_argument("--mode", choices=("min", "max"), default=None, help="with --metric")
    cmd.add_argument("--wait", action="store_true", help="follow it to the end")
    cmd.add_argument("--json", action="store_true", help="print the ids as JSON")
    cmd.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command and its arguments")


def parse_value(text: str) -> Any:
    """A number where it reads back exactly as typed (so ``{lr}`` gives what you wrote)."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if str(value) == text:
            return value
    return text


def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.isidentifier() or not values:
            raise SystemExit(f"tuned: --grid {item!r} must look like name=value1,value2")
        if key in dict(grid):
            raise SystemExit(f"tuned: --grid {key} is given twice")
        grid.append((key, [parse_value(v) for v in values.split(",")]))
    return grid


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template(argv: list[str], names: set[str]) -> list[str]:
    """The argv as the daemon's ``str.format`` template: only ``{name}`` of a --grid name
    is a placeholder; every other brace (JSON, awk, shell) is doubled, so it comes back as
    typed."""
    out = []
    for part in argv:
        pieces, at = [], 0
        for m in _FIELD.finditer(part):
            if m.group(1) in names:
                pieces += [_escape(part[at : m.start()]), m.group(0)]
                at = m.end()
        out.append("".join([*pieces, _escape(part[at:])]))
    return out


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def unused_fields(argv: list[str], names: set[str]) -> list[str]:
    """``{word}`` fields that name no --grid key: passed through, but worth a note."""
    return sorted({m.group(1) for part in argv for m in _FIELD.finditer(part)} - names)


def trainable_name(argv: list[str]) -> str:
    """``python train.py`` -> ``train``; ``./run.sh`` -> ``run.sh``."""
    prog = Path(argv[0]).name
    if prog.startswith("python") and len(argv) > 1 and argv[1].endswith(".py"):
        prog = Path(argv[1]).stem
    return safe_component(prog)


def build_spec(args: argparse.Namespace) -> p.ExperimentSpec:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise SystemExit("tuned: submit needs a command: tuned submit [options] -- CMD ARGS...")
    grid = parse_grid(args.grid)
    keys = [k for k, _ in grid]
    unused = unused_fields(argv, set(keys)) if grid else []
    if unused:
        names = ", ".join(f"{{{n}}}" for n in unused)
        print(f"tuned: note: {names} names no --grid key: passed as typed", file=sys.stderr)
    try:
        custom = json.loads(args.resources)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"tuned: --resources is not JSON: {exc}") from exc
    if not isinstance(custom, dict):
        raise SystemExit('tuned: --resources must be a JSON object like {"name": 1}')
    bundle: dict[str, float] = {"cpu": args.cpu}
    if args.gpu:
        bundle["gpu"] = args.gpu
    if args.memory:
        bundle["memory"] = float(args.memory)
    bundle.update({str(k): float(v) for k, v in custom.items()})
    trials = []
    for index, combo in enumerate(itertools.product(*(values for _, values in grid))):
        config = dict(zip(keys, combo, strict=True))
        suffix = ",".join(f"{k}={v}" for k, v in config.items())
        tag = f"{index}_{suffix}" if suffix else str(index)
        trials.append(p.TrialSpec(tag=tag, config=p.pack_user(config)))
    if bool(args.metric) != bool(args.mode):
        raise SystemExit("tuned: --metric and --mode go together (--metric loss --mode min)")
    name = safe_component(args.name) if args.name else trainable_name(argv)
    storage = args.storage_path or str(default_storage_path())
    return p.ExperimentSpec(
        name=args.name or f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}",
        name_generated=not args.name,
        storage_path=os.path.abspath(os.path.expanduser(storage)),
        trainable_name=name,
        trainable=b"",
        python=sys.executable,
        cwd=os.getcwd(),
        sys_path=[],
        env=dict(os.environ),
        trials=trials,
        resources=[bundle],
        max_failures=args.retries,
        trial_timeout_s=args.timeout,
        command=template(argv, set(keys)),
        metric=args.metric or "",
        mode=args.mode or "",
    )


def cmd_submit(args: argparse.Namespace, connect: Callable[[], Connection]) -> int:
    from .tail import wait_for

    spec = build_spec(args)
    configs = [p.unpack_opaque(t.config) for t in spec.trials]
    with connect() as conn:
        try:
            reply = conn.request(p.Submit(experiment=spec))
        except DaemonError as exc:
            raise SystemExit(f"tuned: {exc.message}") from exc
        assert isinstance(reply, p.Accepted)
        if args.json:
            info = {"experiment_id": reply.experiment_id, "path": reply.path}
            print(msgspec.json.encode({**info, "trial_ids": reply.trial_ids}).decode())
        else:
            print(f"experiment {reply.experiment_id}  {spec.name}  {reply.path}")
            for trial_id, config in zip(reply.trial_ids, configs, strict=True):
                shown = " ".join(part.format(**config) for part in spec.command)
                print(f"  trial {trial_id}  {shown}")
        sys.stdout.flush()
        if not args.wait:
            return 0
        counts = wait_for(conn, reply.experiment_id, quiet=args.json)
    return 0 if counts.get("ERROR", 0) == 0 else 1
