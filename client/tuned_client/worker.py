"""The runtime of a function trial: ``python -m tuned_client.worker``.

It runs with the submitting client's interpreter, working directory and
``sys.path``, so the trainable unpickles exactly as it would in the user's
script. The daemon only sees the exit status and the frames sent here; the
error text and traceback of a failing trainable are sent before exiting.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import signal
import sys
import traceback
from typing import Any

from .framing import ConnectionClosed, decode_message, read_frame, send_message
from .protocol import PROTOCOL_VERSION, Assignment, Error, SpareHello
from .session import DEFAULT_METRIC, Session, StopTrial, connect_patiently, set_session

EXIT_OK = 0
EXIT_ERROR = 1


_libc: ctypes.CDLL | None = None


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the daemon that started it dies.

    The libc handle is kept: a zygote opens it once, and the trials it forks
    (which must ask again, a fork clears the request) reuse it for free.
    """
    global _libc
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        _libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(EXIT_ERROR)


# (path, trainable) loaded by a zygote before it forks: each forked trial gets
# its own copy of the object with the process, so it is not unpickled again.
_preloaded: tuple[str, Any] | None = None


def load_trainable(path: str) -> Any:
    if _preloaded is not None and _preloaded[0] == path:
        return _preloaded[1]
    import cloudpickle

    with open(path, "rb") as f:
        return cloudpickle.load(f)


def preload_trainable(path: str) -> None:
    """Load the trainable once, in the zygote; forked trials use it as it is."""
    global _preloaded
    _preloaded = (path, load_trainable(path))


def enter_trial_dir(trial_dir: str) -> None:
    """Run in the trial's own folder, as Ray Tune does (``RAY_CHDIR_TO_TRIAL_DIR=0``: not).

    ``TUNE_ORIG_WORKING_DIR`` names the folder the script ran in, either way.
    """
    os.environ["TUNE_ORIG_WORKING_DIR"] = os.getcwd()
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0" and os.path.isdir(trial_dir):
        os.chdir(trial_dir)


def report_output(session: Session, value: Any, done: bool) -> None:
    """What a trainable returned or yielded, reported as Ray does: a dict, or ``_metric``."""
    if value is None:
        return
    metrics = value if isinstance(value, dict) else {DEFAULT_METRIC: value}
    session.report(metrics, done=done)


def run(session: Session) -> int:
    """Run the trainable; report what it returns or yields like Ray does; say how it ended."""
    set_session(session)
    try:
        sys.path[:] = list(dict.fromkeys([*session.assignment.sys_path, *sys.path]))
        trainable = load_trainable(session.assignment.trainable_path)
        config = session.config()
        enter_trial_dir(session.assignment.trial_dir)
        returned = trainable(config)
        if inspect.isgenerator(returned):
            for value in returned:
                report_output(session, value, done=False)
        else:
            report_output(session, returned, done=True)
    except StopTrial:
        session.finish(ok=True, stopped=True)
        return EXIT_OK
    except BaseException as exc:
        save_error(session.assignment.trial_dir, exc)
        session.finish(
            ok=False,
            error=f"{type(exc).__name__}: {exc}",
            tb="".join(traceback.format_exception(exc)),
        )
        return EXIT_ERROR
    session.finish(ok=True)
    return EXIT_OK


def save_error(trial_dir: str, exc: BaseException) -> None:
    """Pickle the exception to ``error.pkl`` so ``Result.error`` is of its class (as Ray)."""
    if not trial_dir:
        return
    path = os.path.join(trial_dir, "error.pkl")
    try:
        import cloudpickle

        blob = cloudpickle.dumps(exc)
    except Exception:  # an exception holding what cannot be pickled: error.txt says it all
        blob = b""
    try:
        if not blob:
            os.unlink(path)  # not one left from an earlier attempt
            return
        with open(f"{path}.tmp", "wb") as f:
            f.write(blob)
        os.replace(f"{path}.tmp", path)
    except OSError:
        pass


def run_and_exit(session: Session) -> None:
    os.environ.pop("TUNED_TRIAL_TOKEN", None)  # a command the trainable starts is not this trial
    sys.stdout.flush()
    code = run(session)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    die_with_parent()
    session = Session.connect(
        os.environ["TUNED_SOCKET"], os.environ["TUNED_TRIAL_ID"], os.environ["TUNED_TRIAL_TOKEN"]
    )
    run_and_exit(session)


def become(assignment: Assignment) -> None:
    """Take on the assigned trial's environment, working directory and output files."""
    if assignment.env is not None:
        os.environ.clear()
        os.environ.update(assignment.env)
    if assignment.cwd and os.path.isdir(assignment.cwd):
        os.chdir(assignment.cwd)
    for target, path in ((1, assignment.stdout), (2, assignment.stderr)):
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, target)
            os.close(fd)


def serve_as_spare(pool: str, token: str) -> None:
    """A zygote's spare: say hello, wait for a trial, become it and run it. Never returns.

    The daemon closes a spare's connection when it retires it (idle, or the
    experiment is over): end of file before an assignment is a quiet exit.
    """
    die_with_parent()
    sock = connect_patiently(os.environ["TUNED_SOCKET"])
    try:
        send_message(sock, SpareHello(protocol=PROTOCOL_VERSION, pool=pool, token=token))
        reply = decode_message(read_frame(sock))
    except (ConnectionClosed, OSError):
        os._exit(EXIT_OK)
    if not isinstance(reply, Assignment):
        why = reply.message if isinstance(reply, Error) else type(reply).__name__
        os.write(2, f"tuned: the daemon did not take this spare: {why}\n".encode())
        os._exit(EXIT_ERROR)
    become(reply)
    run_and_exit(Session(sock, reply))


if __name__ == "__main__":
    main()
