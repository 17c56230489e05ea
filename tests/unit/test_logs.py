"""librdkafka's lines go through structlog: never raw ``%N|`` lines on stderr, and a repeat is not a warning."""

from __future__ import annotations

import logging
import time

import pytest
import structlog
from confluent_kafka import Producer

from relay.logs import librdkafka_logger


def _refused_lines(quiet: bool, count: int) -> list[dict[str, object]]:
    """What a producer pointed at a closed port logs through structlog until it has refused ``count`` times."""
    producer = Producer(
        {
            "bootstrap.servers": "127.0.0.1:9",
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 50,
            "logger": librdkafka_logger(quiet),
        }
    )
    with structlog.testing.capture_logs() as logs:
        deadline = time.monotonic() + 20
        while sum("Connection refused" in str(e.get("detail")) for e in logs) < count:
            assert time.monotonic() < deadline, f"only {logs} in 20 s"
            producer.poll(0.1)
    return [entry for entry in logs if entry["event"] == "librdkafka"]


def test_a_refused_connection_is_one_warning_and_its_repeats_are_debug(capfd: pytest.CaptureFixture[str]) -> None:
    """A client reconnecting to a dead broker warns once; the repeats are debug lines; nothing reaches stderr raw."""
    lines = _refused_lines(quiet=False, count=3)
    refused = [e for e in lines if "Connection refused" in str(e["detail"])]
    assert [e["log_level"] for e in refused].count("warning") == 1
    assert all(e.get("repeated") for e in refused if e["log_level"] == "debug")
    assert "%3|" not in capfd.readouterr().err


def test_a_quiet_logger_logs_everything_at_debug() -> None:
    """``quiet`` (readiness probes of starting brokers): every librdkafka line is a debug line."""
    lines = _refused_lines(quiet=True, count=2)
    assert lines and {e["log_level"] for e in lines} == {"debug"}


def test_warnings_below_error_are_debug_lines() -> None:
    """librdkafka's own warnings (``%4``, e.g. a retried request) are debug lines, as before."""
    logger = librdkafka_logger()
    with structlog.testing.capture_logs() as logs:
        logger.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-1", "retrying")
    assert [(e["event"], e["log_level"]) for e in logs] == [("librdkafka", "debug")]
