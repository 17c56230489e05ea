"""Start-up that waits for clusters instead of stopping: each step is tried again while its failure may pass.

A relay started while a source or the target does not answer, or while a broker answers with a
retriable error (a leader being elected, a group coordinator loading), should behave as it does
when that happens later: say so, back off, and go on once the cluster is back, without a crash loop.
:class:`StartUp` runs one start-up step (choosing a source, reading positions back, reading end
offsets) and, when it fails for such a reason (a :class:`~relay.errors.RelayError` marked
``transient``, or a retriable :class:`KafkaException`), logs it once at warning, reports it to
``/readyz`` and tries again after a backoff; any other failure is raised as before.

Liveness while starting (see :mod:`relay.health`): every attempt that begins counts as progress,
so a relay that keeps trying is alive, while a single call that hangs (a positions read, an S3
probe) is not once it has taken longer than the stall timeout.

Runs on the relay's thread; a stop (SIGTERM) ends the wait at once with :class:`StartUpStopped`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import structlog
from confluent_kafka import KafkaException

from relay.backoff import backoff_delay
from relay.errors import RelayError
from relay.health import RelayHealth
from relay.kafkautil import client_error_text, retriable
from relay.settings import Backoff

log = structlog.get_logger("kafka_lfs_relay.relay")

T = TypeVar("T")


class StartUpStopped(RelayError):
    """A stop was asked for while start-up waited; nothing was relayed, nothing is lost (exit 0)."""

    code = "stopped"
    exit_code = 0


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` may pass by itself, or None when it is a failure to stop on."""
    if isinstance(exc, RelayError):
        return str(exc) if exc.transient else None
    if isinstance(exc, KafkaException) and exc.args and retriable(exc.args[0]):
        return client_error_text(exc.args[0].str())
    return None


class StartUp:
    """Runs start-up steps, trying each again while it fails for a reason that may pass (module docstring)."""

    def __init__(self, health: RelayHealth, stopping: threading.Event, backoff: Backoff) -> None:
        self._health = health
        self._stopping = stopping
        self._backoff = backoff

    def step(self, what: str, run: Callable[[], T]) -> T:
        """``run()``'s result, trying again with backoff while it fails transiently; ``what`` names the step."""
        attempt = 0
        said: set[str] = set()
        reason = ""
        while True:
            self._health.starting(None if attempt == 0 else f"{what}, attempt {attempt + 1}: {reason}")
            try:
                result = run()
            except Exception as exc:
                why = transient_reason(exc)
                if why is None:
                    raise
                attempt, reason = attempt + 1, why
                if reason not in said:
                    # Once per reason: a cluster that stays away must not fill the log.
                    log.warning(
                        "start-up waits: the cluster does not answer or is not ready; trying again with backoff",
                        step=what,
                        reason=reason,
                        attempt=attempt,
                    )
                    said.add(reason)
                self._health.starting(f"{what}: {reason}")
                if self._stopping.wait(backoff_delay(self._backoff.min, self._backoff.max, attempt)):
                    raise StartUpStopped(f"stopped while start-up waited ({what}: {reason})") from None
                continue
            if attempt:
                log.info("start-up goes on", step=what, attempts=attempt + 1)
            self._health.starting(None)
            return result
