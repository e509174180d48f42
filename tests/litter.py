"""What the suite would leave in /tmp if it leaked, told apart from what others leave there.

Every test has a private TMPDIR and XDG_RUNTIME_DIR, and the suite's one folder
in /tmp (the socket root) goes at the end of the run; so anything new in /tmp
that looks like the suite's is a leak, and conftest fails the run over it. The
names: the socket root's (``tuned-test-*``), the client's and daemon's defaults
without a private folder (``tuned-<uid>``, ``tuned-trial-*``, ``tuned-ckpt-*``,
``checkpoint_*``), Ray's default temp root (``ray``), and a trainable's
``TemporaryDirectory()`` holding the files the suite's trainables write.

/tmp is shared. Another run's socket root says whose it is (``.owner``), so it
is never ours. The other names are not signed: while another pytest run of this
user is going on, they may be its, so they are reported but do not fail the run.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import psutil
from daemons import OWNER

SIGNED = "tuned-test-*"
UNSIGNED = (f"tuned-{os.getuid()}", "tuned-trial-*", "tuned-ckpt-*", "checkpoint_*", "ray")
TRAINABLE_FILES = {"state.json", "s.json", "who"}


def another_runs(entry: os.DirEntry[str]) -> bool:
    """A socket root of another pytest run (it says whose, or its older name does)."""
    try:
        return int(Path(entry.path, OWNER).read_text()) != os.getpid()
    except (OSError, ValueError):
        pids = re.findall(r"-(\d+)(?=-|$)", entry.name)  # older runs named theirs by pid
        return bool(pids) and str(os.getpid()) not in pids


def litter() -> tuple[set[str], set[str]]:
    """Names in /tmp like the suite's: (surely ours if new, perhaps another run's)."""
    ours, unsigned = set(), set()
    for entry in os.scandir("/tmp"):
        if fnmatch.fnmatch(entry.name, SIGNED):
            if not another_runs(entry):
                ours.add(entry.name)
        elif any(fnmatch.fnmatch(entry.name, pattern) for pattern in UNSIGNED):
            unsigned.add(entry.name)
        elif entry.name.startswith("tmp") and entry.is_dir(follow_symlinks=False):
            try:
                if TRAINABLE_FILES & set(os.listdir(entry.path)):
                    unsigned.add(entry.name)
            except OSError:
                continue
    return ours, unsigned


def other_pytest_runs() -> list[int]:
    """Pids of this user's other pytest processes (not ours, nor our children's)."""
    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.children(recursive=True))}
    others = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if (
                proc.pid not in mine
                and proc.info["uids"].real == os.getuid()
                and any("pytest" in part for part in cmdline[:3])
            ):
                others.append(proc.pid)
        except (psutil.Error, AttributeError):
            continue
    return others
