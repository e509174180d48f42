"""The errors of a tuning run: ``TuneError``, and a failed trial's ``TrialError``.

Kept apart from ``result`` so the readers of experiment folders (``analysis``)
and the results themselves both take them from below.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


class TuneError(Exception):
    """Base of the errors this library raises (``ray.tune.TuneError``)."""


class TrialError(TuneError):
    """A trial failed; ``str()`` is the error line, ``traceback`` the trial's traceback."""

    def __init__(self, message: str, traceback: str = "", trial_id: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback
        self.trial_id = trial_id

    def __str__(self) -> str:
        text = self.args[0] if self.args else ""
        if self.traceback and self.traceback.strip() != text:
            return f"{text}\n\nTrial {self.trial_id} traceback:\n{self.traceback}"
        return str(text)


ERROR_PICKLE = "error.pkl"  # the trial's exception, pickled by the worker when it fails


def trial_error(message: str, traceback: str, trial_id: str, trial_dir: str) -> TrialError:
    """The error of a failed trial, an instance of the exception class it raised too.

    As Ray's ``RayTaskError(ValueError)``: ``isinstance(result.error, ValueError)``
    holds for a trial that raised ValueError, and ``str()`` shows its traceback.
    The exception comes from ``error.pkl`` in the trial's folder; without one (a
    command trial, an exception that does not pickle, a trial killed by a
    signal) it is a plain ``TrialError``.
    """
    cause = _pickled_cause(trial_dir, message)
    if cause is None or isinstance(cause, TrialError):
        return cause or TrialError(message, traceback, trial_id)
    cls = type(cause)
    try:
        derived = type(
            f"TrialError({cls.__name__})", (TrialError, cls), {"__module__": cls.__module__}
        )
        err: TrialError = derived.__new__(derived, *cause.args)
    except TypeError:  # a class that cannot be combined (layout, final): the plain error
        return TrialError(message, traceback, trial_id)
    with contextlib.suppress(AttributeError, TypeError):
        err.__dict__.update(getattr(cause, "__dict__", {}))
    err.args = (message,)
    err.traceback = traceback
    err.trial_id = trial_id
    err.cause = cause  # type: ignore[attr-defined]
    return err


def _pickled_cause(trial_dir: str, message: str) -> BaseException | None:
    path = Path(trial_dir) / ERROR_PICKLE if trial_dir else None
    if path is None or not path.is_file():
        return None
    try:
        import cloudpickle

        with open(path, "rb") as f:
            cause = cloudpickle.load(f)
    except Exception:  # a class that no longer imports, a damaged file: the text is enough
        return None
    if not isinstance(cause, BaseException) or not message.startswith(type(cause).__name__):
        return None  # left over from an earlier attempt that failed differently
    return cause
