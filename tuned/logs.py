"""structlog set-up: JSON lines to the state directory's log, or the console in the foreground."""

from __future__ import annotations

import logging
import sys

import structlog

from .config import Settings


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    processors: list[structlog.types.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
        structlog.processors.format_exc_info,
    ]
    if settings.foreground:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        factory: structlog.types.WrappedLogger = structlog.PrintLoggerFactory(sys.stderr)
    else:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        processors.append(structlog.processors.JSONRenderer())
        log_file = open(settings.log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the daemon
        factory = structlog.WriteLoggerFactory(file=log_file)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
