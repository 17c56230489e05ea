"""Unit tests of relay.logs: librdkafka's lines reach structlog at a level that keeps warnings visible."""

from __future__ import annotations

import logging

import structlog

from relay.logs import librdkafka_logger


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
