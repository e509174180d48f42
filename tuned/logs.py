"""structlog set-up: JSON lines to the state directory's log, or the console in the foreground."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

import structlog

from .config import Settings
from .store.private import open_private, rotate

LOG_LIMIT = 64 << 20  # tuned.log moves to tuned.log.1 (two kept) at this size


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    processors: list[structlog.types.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
        structlog.processors.format_exc_info,
    ]
    if settings.foreground:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        factory: structlog.types.WrappedLogger = structlog.PrintLoggerFactory(
            _SafeStream(sys.stderr)  # type: ignore[arg-type]
        )
    else:
        processors.append(structlog.processors.JSONRenderer())
        factory = structlog.WriteLoggerFactory(file=SafeLogFile(settings.log_path))  # type: ignore[arg-type]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


class SafeLogFile:
    """The log file, where a full disk or a read-only state dir costs lines, never the daemon.

    Logging happens everywhere on the event loop (``log.info`` inside a request
    handler, a trial's cleanup): an ``OSError`` from a write would escape into
    that task and take the daemon down. A line that cannot be written whole is
    cut back out (the file stays valid JSON lines) and counted; the first
    failure goes to stderr once, and the next successful write says how many
    lines were dropped.
    """

    def __init__(self, path: Path, limit: int = LOG_LIMIT) -> None:
        self.path = path
        self.limit = limit
        self.dropped = 0
        self._fd = -1
        self._stderr: TextIO = sys.stderr
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = open_private(path)
        except OSError as exc:
            self._failed(exc)

    def write(self, text: str) -> None:
        if self._fd < 0:
            self.dropped += 1
            return
        data = text.encode("utf-8", "replace")
        if self.dropped:
            note = f'{{"event": "log lines lost (disk full?)", "lines": {self.dropped}}}\n'
            data = note.encode() + data
        try:
            end = os.fstat(self._fd).st_size
            if end >= self.limit:
                end = self._rotate()
            written = os.write(self._fd, data)
            if written != len(data):
                os.ftruncate(self._fd, end)  # never half a line
                raise OSError(f"short write to {self.path}")
        except OSError as exc:
            if not self.dropped:
                self._failed(exc)
            self.dropped += 1
            return
        self.dropped = 0

    def _rotate(self) -> int:
        """Start a new file once this one is ``limit`` bytes: a daemon lives for months."""
        rotate(self.path, self.limit)
        fd = open_private(self.path)
        os.close(self._fd)
        self._fd = fd
        return os.fstat(fd).st_size

    def flush(self) -> None:
        """Writes go straight to the file: nothing is buffered."""

    def _failed(self, exc: OSError) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(f"tuned: cannot write the log {self.path}: {exc}", file=self._stderr)


class _SafeStream:
    """stderr (a file on a full disk, a closed pipe) that loses lines, never the daemon."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            return self._stream.write(text)
        return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()
