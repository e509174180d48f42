"""Ray's check that a trainable pickles, made when the ``Tuner`` is (``TypeError``).

Ray pickles the trainable in the ``Tuner``'s constructor and, when that fails,
prints ``inspect_serializability``'s trace: which captured variable cannot be
pickled. This finds it among the function's closure and the globals it names
(one level down, as most such failures are: a lock, a connection, a file).
``with_parameters`` objects are left out (they are pickled, or stored, at fit()).
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from .parameters import parameters_left_out
from .trial_errors import TuneError


class TrainableNotSerializable(TuneError, TypeError):
    """Ray raises ``TypeError`` here; it is a ``TuneError`` too, as tuned's other refusals."""

_HINT = (
    "was found to be non-serializable. There may be multiple other undetected variables "
    "that were non-serializable. Consider either removing the instantiation/imports of "
    "these variables or moving the instantiation into the scope of the function/class."
)


def _fails(obj: Any) -> BaseException | None:
    try:
        with parameters_left_out():
            cloudpickle.dumps(obj)
    except Exception as exc:
        return exc
    return None


def _captured(fn: Any) -> dict[str, Any]:
    """What a function carries into its pickle: its closure and the globals it names."""
    import inspect  # only once pickling failed: a plain Tuner() never loads it

    if not inspect.isfunction(fn):
        return dict(getattr(fn, "__dict__", {}))
    found: dict[str, Any] = {}
    closure = inspect.getclosurevars(fn)
    found.update(closure.nonlocals)
    found.update(closure.globals)
    return found


def check_serializable(trainable: Any) -> None:
    """Raise Ray's ``TypeError`` (with the culprit named) if ``trainable`` cannot pickle."""
    error = _fails(trainable)
    if error is None:
        return
    culprits = [
        f"\tFailTuple({name} [obj={value!r}, parent={trainable!r}])"
        for name, value in _captured(trainable).items()
        if _fails(value) is not None
    ] or [f"\tFailTuple({getattr(trainable, '__name__', trainable)!r} [obj={trainable!r}])"]
    trace = "\n".join(culprits)
    raise TrainableNotSerializable(
        "The provided trainable is not serializable, which is a requirement since the "
        "trainable is serialized and deserialized when transferred to remote workers. See "
        "below for a trace of the non-serializable objects that were found in your "
        f"trainable:\n!!! FAIL serialization: {error}\nVariable: \n\n{trace}\n\n{_HINT}"
    )
