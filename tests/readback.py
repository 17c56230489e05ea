"""Reading a topic back to its end, partition by partition: the one loop every test and the demo checks use."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from relay.logs import librdkafka_logger


def read_to_end(
    client_config: Mapping[str, Any],
    topic: str,
    partitions: int,
    *,
    batch: int = 1000,
    timeout: float = 120,
    committed: bool = True,
) -> dict[int, list[KafkaMessage]]:
    """Every record of ``topic`` per partition, in log order, up to the end each partition has when reached.

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
                    # The end as reached: a partition written all the while is read up to there, so a
                    # read racing a busy writer ends; what it fetched beyond is left out, in order.
                    at_end.add(partition)
                    consumer.pause([TopicPartition(topic, partition)])
                    continue
                if partition not in at_end:
                    out[partition].append(msg)
    finally:
        consumer.close()
    return out
