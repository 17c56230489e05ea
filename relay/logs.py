"""Logging: structlog for the relay's own lines, with librdkafka's routed through it."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog once for the process: console lines on a terminal, or JSON lines."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class _ToStructlog(logging.Handler):
    """Forwards librdkafka's log records (which never carry credentials) to structlog.

    librdkafka's errors and warnings are warnings here (its "errors" are mostly transient, such as
    a refused connection, which the relay handles and reports itself); notices and below are debug.
    Warnings must not be demoted: an offset reset, for one, is a librdkafka warning.
    """

    def emit(self, record: logging.LogRecord) -> None:
        log = structlog.get_logger("librdkafka")
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            log.warning("librdkafka", detail=text)
        else:
            log.debug("librdkafka", detail=text)


def librdkafka_logger() -> logging.Logger:
    """The stdlib logger handed to every confluent-kafka client as ``logger``."""
    logger = logging.getLogger("kafka_lfs_relay.librdkafka")
    if not logger.handlers:
        logger.addHandler(_ToStructlog())
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger
