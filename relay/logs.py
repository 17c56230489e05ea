"""Logging: structlog for the relay's own lines, with librdkafka's routed through it."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _Masked:
    """A renderer whose every line goes through ``mask`` (a :class:`relay.errors.SecretMasker`)."""

    def __init__(self, renderer: Callable[..., Any], mask: Callable[[str], str]) -> None:
        self._renderer = renderer
        self._mask = mask

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        return self._mask(str(self._renderer(logger, method_name, event_dict)))


def configure(
    level: str = "info", fmt: str = "console", mask: Callable[[str], str] | None = None, worker: int | None = None
) -> None:
    """Configure structlog for the process: console lines on a terminal, or JSON lines.

    A traceback (``log.exception``, or an exception that ends a thread) is rendered plain, as
    Python prints it, and never with local variables: structlog's console renderer would use
    ``rich`` or ``better-exceptions`` when installed, which show every frame's locals, secrets
    included. ``mask``, if given, scrubs every rendered line (known secret values become ``***``).
    ``worker``: this process is worker ``worker`` of ``run --workers``; every line says so.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *([_Static({"worker": worker})] if worker is not None else []),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer if mask is None else _Masked(renderer, mask),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception that ends a thread, logged like any other line (plain traceback, masked)."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    structlog.get_logger("kafka_lfs_relay").error(
        "thread stopped by an exception",
        thread=name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


# What differs between two otherwise identical librdkafka lines: how long the failed attempt took.
_VOLATILE = re.compile(r" ?\(after \d+ms in state [A-Z_]+(?:, \d+ identical error\(s\) suppressed)?\)")
_REPEAT_SECONDS = 60.0


class _Static:
    """A processor adding the same fields to every line (of every thread)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        event.update(self.fields)
        return event


class _ToStructlog(logging.Handler):
    """Forwards librdkafka's log records (which never carry credentials) to structlog.

    librdkafka's errors and warnings are warnings here; notices and below are debug lines.
    Warnings must not be demoted: an offset reset, for one, is a librdkafka warning. Its errors
    are mostly transient, such as a refused connection, and a client whose broker is down repeats
    the same one at every reconnect, several times a second at first; the relay reports that
    state in its own words (a failed health check, a switch, a target error), so a repeat of the
    same line at the same level from the same client within a minute is a debug line. ``quiet``
    logs everything at debug: for clients that expect failures, such as a readiness probe
    polling a broker that is starting.
    """

    def __init__(self, quiet: bool) -> None:
        super().__init__()
        self.quiet = quiet
        self._warned: dict[tuple[int, str], float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        log = structlog.get_logger("librdkafka")
        text = record.getMessage()
        if self.quiet or record.levelno < logging.WARNING:
            log.debug("librdkafka", detail=text)
            return
        # Called with the handler's lock held (logging.Handler.handle), so the dict is safe.
        key = (record.levelno, _VOLATILE.sub("", text))
        now = time.monotonic()
        last = self._warned.get(key)
        if last is not None and now - last < _REPEAT_SECONDS:
            log.debug("librdkafka", detail=text, repeated=True)
            return
        if len(self._warned) >= 1000:
            self._warned.clear()
        self._warned[key] = now
        log.warning("librdkafka", detail=text)


def librdkafka_logger(quiet: bool = False) -> logging.Logger:
    """The stdlib logger handed to every confluent-kafka client as ``logger``.

    Every client the project creates (the relay's, ``check``'s, the sandbox's, the demo's, the
    benchmarks' and the tests') takes one, so librdkafka never writes its own ``%N|...`` lines
    to stderr. ``quiet``: every line at debug (see :class:`_ToStructlog`).
    """
    logger = logging.getLogger("kafka_lfs_relay.librdkafka" + (".quiet" if quiet else ""))
    if not logger.handlers:
        logger.addHandler(_ToStructlog(quiet))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger
