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


def array_length(raw: bytes | msgspec.Raw) -> int:
    """The length of the msgpack array ``raw`` holds, from its header alone."""
    data = memoryview(raw)
    if not data:
        raise ValueError("an empty piece of grid values")
    head = data[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(data) >= 3:
        return int.from_bytes(data[1:3], "big")
    if head == 0xDD and len(data) >= 5:
        return int.from_bytes(data[1:5], "big")
    raise ValueError("a piece of grid values is not a msgpack array")


class _Column:
    """One axis' values, a piece decoded at a time (the one last asked for is kept)."""

    def __init__(self, axis: p.GridAxis, chunk: int) -> None:
        if not axis.path:
            raise ValueError("a grid axis needs a path")
        self.pieces = axis.values
        self.chunk = chunk
        lengths = [array_length(piece) for piece in self.pieces]
        if any(n != chunk for n in lengths[:-1]) or (lengths and not 0 < lengths[-1] <= chunk):
            raise ValueError(f"grid axis {axis.path}: its values are not in pieces of {chunk}")
        self.length = sum(lengths)
        self._at = -1
        self._piece: list[Any] = []

    def __getitem__(self, index: int) -> Any:
        at, offset = divmod(index, self.chunk)
        if at != self._at:
            piece = _decoder.decode(self.pieces[at])
            if not isinstance(piece, list) or len(piece) != array_length(self.pieces[at]):
                raise ValueError("a piece of grid values does not decode to its length")
            self._piece, self._at = piece, at
        return self._piece[offset]


class Grid:
    """A plan, ready to make trials: O(pieces) to set up, whatever the grid's size."""

    def __init__(self, plan: p.GridPlan) -> None:
        if plan.repeats < 0 or plan.start < 0 or plan.first_trial < 0 or plan.chunk < 1:
            raise ValueError(
                "a grid plan's repeats, start and first_trial cannot be negative, "
                "nor its chunk below 1"
            )
        self.plan = plan
        self._skeleton = bytes(plan.skeleton)
        self._columns = [_Column(axis, plan.chunk) for axis in plan.axes]
        self._names = [clean_value(axis.path[-1]) for axis in plan.axes]
        self.size = math.prod(c.length for c in self._columns)
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
            value = column[rest % column.length]
            rest //= column.length
            assign(config, axis.path, value)
            parts.append(f"{name}={clean_value(value)}")
        suffix = ",".join(parts)
        return (f"{point}_{suffix}" if suffix else str(point)), msgspec.Raw(_encoder.encode(config))


def pieces(values: list[Any], chunk: int = p.GRID_CHUNK) -> list[msgspec.Raw]:
    """An axis' values packed as a ``GridAxis`` carries them (``pack_user``: plain values)."""
    return [p.pack_user(values[i : i + chunk]) for i in range(0, len(values), chunk)]
