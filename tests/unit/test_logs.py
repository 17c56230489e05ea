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


def _forwarded(level: int) -> list[str]:
    with structlog.testing.capture_logs() as captured:
        librdkafka_logger().log(level, "OFFSET [rdkafka#consumer-1] t [0]: offset reset to offset END")
    return [entry["log_level"] for entry in captured]


def test_librdkafka_warnings_stay_warnings() -> None:
    """A librdkafka warning (an offset reset is one) is logged as a warning, not demoted to debug."""
    assert _forwarded(logging.WARNING) == ["warning"]


def test_librdkafka_errors_are_warnings_and_notices_debug() -> None:
    """librdkafka's (mostly transient) errors are warnings; its notices and debug lines are debug."""
    assert _forwarded(logging.ERROR) == ["warning"]
    assert _forwarded(logging.INFO) == ["debug"]
    assert _forwarded(logging.DEBUG) == ["debug"]
