"""Reading a topic back to its end, partition by partition: the one loop every test and the demo checks use."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from relay.logs import librdkafka_logger


def _end(consumer: Consumer, topic: str, partition: int) -> float:
    """The partition's end offset now; unbounded (the end-of-partition event decides) if it cannot say yet."""
    try:
        return float(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30, cached=False)[1])
    except KafkaException:  # the topic is not there yet: read until its end is reached
        return math.inf


def read_to_end(
    client_config: Mapping[str, Any],
    topic: str,
    partitions: int,
    *,
    batch: int = 1000,
    timeout: float = 120,
    committed: bool = True,
) -> dict[int, list[KafkaMessage]]:
    """Every record of ``topic`` per partition, in log order, up to the end each partition had when the read began.

    ``committed`` reads with ``read_committed`` (what a consumer of the target sees); ``batch`` is
    how many records one poll takes (a reader racing busy writers needs a large one to catch up).
    Fails if the end is not reached within ``timeout`` seconds.
    """
    consumer = Consumer(
        {
            **client_config,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "auto.offset.reset": "error",
            "logger": librdkafka_logger(),
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    # The end of each partition as the read begins (the last stable offset under read_committed): a
    # partition written all the while, by a relay that commits every few milliseconds, may never give
    # an empty fetch, hence no end-of-partition event; a record at or past this end says it instead.
    ends = {p: _end(consumer, topic, p) for p in range(partitions)}
    out: dict[int, list[KafkaMessage]] = {p: [] for p in range(partitions)}
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"reading {topic} did not reach the end within {timeout}s"
            for msg in consumer.consume(batch, 0.5):
                err = msg.error()
                partition = msg.partition() or 0
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                elif partition not in at_end and (msg.offset() or 0) < ends[partition]:
                    out[partition].append(msg)
                    continue
                at_end.add(partition)
                consumer.pause([TopicPartition(topic, partition)])
    finally:
        consumer.close()
    return out
