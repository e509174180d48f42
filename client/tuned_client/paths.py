"""Where the daemon's socket and state live, by default and as overridden.

This is one of the edges where the environment is read (the other is the
``tuned`` command line): ``TUNED_SOCKET`` and ``TUNED_STATE_DIR`` override the
per-user defaults, and explicit arguments override both.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_socket_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TUNED_SOCKET"):
        return Path(env["TUNED_SOCKET"])
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "tuned" / "tuned.sock"
    return Path(f"/tmp/tuned-{os.getuid()}") / "tuned.sock"


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TUNED_STATE_DIR"):
        return Path(env["TUNED_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tuned"


def default_storage_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TUNED_STORAGE_PATH"):
        return Path(env["TUNED_STORAGE_PATH"])
    return Path.home() / "tuned_results"
