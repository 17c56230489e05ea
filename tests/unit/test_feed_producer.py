"""Unit tests of kafka_lfs_relay.sandbox.FeedProducer: a refused record is never counted as sent."""

from __future__ import annotations

import logging

import pytest

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
