"""Trial output on the script's terminal, as Ray prints it: ``(train_fn pid=123) line``.

The daemon writes each trial's stdout and stderr to ``stdout`` and ``stderr``
in its folder (so nothing is lost when no one watches); while ``fit()``
follows, new complete lines are read from there and printed with Ray's prefix,
stdout to stdout and stderr to stderr. ``RunConfig(log_to_file=True)`` keeps
them in the files only, as in Ray; a file name (or a pair of names) also keeps
them there, under those names (links to the two files).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, TextIO

from .trial import TrialView

POLL_S = 0.2  # the files of running trials are read at most this often


class _Tail:
    __slots__ = ("offsets", "partial", "pid", "trial")

    def __init__(self, trial: TrialView) -> None:
        self.trial = trial
        self.pid = trial.pid
        self.offsets = [0, 0]
        self.partial = [b"", b""]


class TrialOutput:
    def __init__(self, trainable: str, log_to_file: Any, out: TextIO, err: TextIO) -> None:
        self.trainable = trainable
        self.echo = log_to_file is False or log_to_file is None
        self.names: tuple[str, str] | None = None
        if isinstance(log_to_file, str):
            self.names = (log_to_file, log_to_file)
        elif isinstance(log_to_file, tuple | list):
            self.names = (str(log_to_file[0]), str(log_to_file[1]))
        self.streams = (out, err)
        self.tails: dict[str, _Tail] = {}
        self.last_poll = 0.0

    def started(self, view: TrialView) -> None:
        if self.names is not None and view.path:
            self._link(view.path)
        if not self.echo or not view.path:
            return
        tail = self.tails.get(view.trial_id)
        if tail is None:
            self.tails[view.trial_id] = _Tail(view)
        else:  # a retry appends to the same files: go on from where we are
            tail.pid = view.pid

    def _link(self, folder: str) -> None:
        """``log_to_file="name"`` or ``(out, err)``: the trial's files under those names too."""
        assert self.names is not None
        out_name, err_name = self.names
        pairs = [(out_name, "stdout")] if out_name == err_name else [
            (out_name, "stdout"), (err_name, "stderr"),
        ]  # fmt: skip
        for name, target in pairs:
            link = os.path.join(folder, name)
            if name in ("stdout", "stderr") or os.path.lexists(link):
                continue
            with contextlib.suppress(OSError):
                os.symlink(target, link)

    def poll(self, trials: dict[str, TrialView], final: bool = False) -> None:
        if not self.tails:
            return
        now = time.monotonic()
        if not final and now - self.last_poll < POLL_S:
            return
        self.last_poll = now
        for tail in list(self.tails.values()):
            self._read(tail, final)

    def drain(self, view: TrialView) -> None:
        tail = self.tails.get(view.trial_id)
        if tail is not None:
            self._read(tail, final=True)

    def finished(self, view: TrialView) -> None:
        self.tails.pop(view.trial_id, None)

    def _read(self, tail: _Tail, final: bool) -> None:
        for index, name in enumerate(("stdout", "stderr")):
            path = os.path.join(tail.trial.path, name)
            try:  # a stat is a fifth of an open, seek, read and close: most trials print nothing
                if os.stat(path).st_size <= tail.offsets[index]:
                    continue
                with open(path, "rb") as f:
                    f.seek(tail.offsets[index])
                    data = f.read()
            except OSError:
                continue
            if not data:
                continue
            tail.offsets[index] += len(data)
            data = tail.partial[index] + data
            lines = data.split(b"\n")
            rest = lines.pop()  # after the last newline: a line still being written
            if final and rest:
                lines.append(rest)
                rest = b""
            tail.partial[index] = rest
            prefix = f"({self.trainable} pid={tail.pid}) "
            text = "".join(prefix + line.decode(errors="replace") + "\n" for line in lines)
            if text:
                stream = self.streams[index]
                stream.write(text)
                stream.flush()
