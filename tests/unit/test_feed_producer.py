"""Unit tests of kafka_lfs_relay.sandbox.FeedProducer: a refused record is never counted as sent."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import structlog

from kafka_lfs_relay.sandbox import FeedProducer, SandboxError


def test_a_record_that_times_out_fails_flush_all_with_its_topic() -> None:
    """A record librdkafka gives up on (no broker at all) makes flush_all raise, naming its topic and partition."""
    quiet = logging.getLogger("test.feed-producer")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    producer = FeedProducer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 300, "logger": quiet})
    producer.send("feed-topic", b"value", b"key", partition=0)
    with pytest.raises(SandboxError, match="feed-topic/0") as info:
        producer.flush_all(30)
    assert "1 records were refused" in str(info.value)


def test_a_dropped_producer_is_destroyed_at_once_not_at_the_next_garbage_collection() -> None:
    """No reference cycle: the last reference gone, the client is gone (it stops reconnecting to its cluster)."""
    gc.disable()
    try:
        producer = FeedProducer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 300})
        ref = weakref.ref(producer)
        del producer
        assert ref() is None
    finally:
        gc.enable()


def test_its_client_logs_go_through_structlog(capfd: pytest.CaptureFixture[str]) -> None:
    """Without a ``logger`` in its config, librdkafka's lines go to structlog, never raw to stderr."""
    producer = FeedProducer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 300})
    with structlog.testing.capture_logs() as logs:
        producer.send("feed-topic", b"value")
        with pytest.raises(SandboxError):
            producer.flush_all(30)
    assert any(entry["event"] == "librdkafka" for entry in logs)
    assert "%3|" not in capfd.readouterr().err
