"""A plain grid's trials, one at a time, from its ``GridPlan`` (daemon and client alike).

Ray's ``BasicVariantGenerator`` makes a grid's trials as the experiment needs
them; a ``GridPlan`` lets the daemon do the same without the client: trial
``k`` of the plan is grid point ``k`` (the first axis changing fastest, the
whole grid ``repeats`` times), its config the skeleton with each axis' value
put in, its tag Ray's ``"<k>_<name>=<value>,..."``. Configs stay msgpack from
end to end: user objects in the skeleton are carried as the extension bytes
they came as and never unpickled, so the bytes equal those ``pack_user`` gives
the config ``generate_variants`` makes (``tests/test_gridplan.py`` holds them
to it).

Pure: msgspec and the protocol only, no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from . import protocol as p

# Tags end up in directory names: keep only characters that are safe everywhere.
_INVALID_TAG_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")


def clean_value(value: Any) -> str:
    """A value as Ray writes it in a tag: floats to 4 decimals, anything else stripped
    of characters unsafe in paths."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if type(value) is int:
        return str(value)  # digits and a sign: nothing to strip
    return _INVALID_TAG_CHARS.sub("_", str(value)).strip("_")


def _keep_ext(code: int, data: memoryview) -> msgspec.msgpack.Ext:
    return msgspec.msgpack.Ext(code, bytes(data))


_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ext_hook=_keep_ext)
_encoder = msgspec.msgpack.Encoder()


def assign(config: Any, path: list[Any] | tuple[Any, ...], value: Any) -> None:
    """Put ``value`` at ``path`` in a decoded config (dicts and lists)."""
    for key in path[:-1]:
        config = config[key]
    config[path[-1]] = value


class Grid:
    """A plan, ready to make trials: its columns decoded once."""

    def __init__(self, plan: p.GridPlan) -> None:
        if plan.repeats < 0 or plan.start < 0 or plan.first_trial < 0:
            raise ValueError("a grid plan's repeats, start and first_trial cannot be negative")
        self.plan = plan
        self._skeleton = bytes(plan.skeleton)
        self._columns: list[list[Any]] = []
        for axis in plan.axes:
            if not axis.path:
                raise ValueError("a grid axis needs a path")
            column = _decoder.decode(axis.values)
            if not isinstance(column, list):
                raise ValueError(f"grid axis {axis.path}: its values are not a list")
            self._columns.append(column)
        self._names = [clean_value(axis.path[-1]) for axis in plan.axes]
        self.size = math.prod(len(c) for c in self._columns)
        self.points = self.size * plan.repeats
        # the experiment's trials: those listed before the plan, then one per point left
        self.total = plan.first_trial + max(0, self.points - plan.start)

    def point(self, index: int) -> int:
        """The grid point trial ``index`` of the experiment is made from."""
        return self.plan.start + index - self.plan.first_trial

    def trial(self, index: int) -> tuple[str, msgspec.Raw]:
        """Trial ``index``'s tag and packed config."""
        point = self.point(index)
        if not self.plan.first_trial <= index < self.total:
            raise IndexError(f"trial {index} is not one of this plan's")
        config = _decoder.decode(self._skeleton)
        rest = point % self.size
        parts = []
        for axis, column, name in zip(self.plan.axes, self._columns, self._names, strict=True):
            value = column[rest % len(column)]
            rest //= len(column)
            assign(config, axis.path, value)
            parts.append(f"{name}={clean_value(value)}")
        suffix = ",".join(parts)
        return (f"{point}_{suffix}" if suffix else str(point)), msgspec.Raw(_encoder.encode(config))
