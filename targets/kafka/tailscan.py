"""Read the newest ``kfr-pos`` header back from the tail of each target partition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, TopicPartition

from relay.kafkautil import headers_of
from relay.message import SourcePartition
from targets.kafka import positions

_WINDOW = 512


class TailScanError(RuntimeError):
    """The target could not be read back; the message names the topic/partition."""


def _scan_window(
    consumer: Consumer, topic: str, partition: int, start: int, end: int, timeout: float
) -> dict[SourcePartition, int] | None:
    """The last position vector among committed records in ``[start, end)``, or None."""
    consumer.assign([TopicPartition(topic, partition, start)])
    newest: dict[SourcePartition, int] | None = None
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise TailScanError(
                f"reading back {topic}/{partition} offsets {start}..{end} timed out after {timeout:.0f}s"
            )
        batch = consumer.consume(500, timeout=0.5)
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return newest
                raise TailScanError(f"reading back {topic}/{partition}: {err.str()}")
            offset = msg.offset() or 0
            if offset >= end:
                return newest
            for name, value in headers_of(msg):
                if name == positions.HEADER and isinstance(value, bytes):
                    try:
                        newest = positions.decode(value)
                    except positions.PositionFormatError as exc:
                        raise TailScanError(f"{topic}/{partition}@{offset}: {exc}") from None
            if offset >= end - 1:
                return newest


def newest_positions(
    client_config: dict[str, str],
    topic: str,
    partitions: Sequence[int],
    timeout: float = 30.0,
    on_window: Callable[[str, int, int], None] | None = None,
) -> list[dict[SourcePartition, int]]:
    """For each target partition, the newest committed position vector, scanning backwards.

    Records of other producers at the tail are skipped; a partition that holds no relay record
    at all is read back to its start (once per start-up).
    """
    conf = {
        **client_config,
        "group.id": f"kafka-lfs-relay-tailscan-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    }
    consumer = Consumer(conf)
    found: list[dict[SourcePartition, int]] = []
    try:
        for partition in partitions:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            except Exception as exc:  # confluent_kafka raises KafkaException with the broker's reason
                raise TailScanError(f"reading the end offsets of {topic}/{partition}: {exc}") from None
            end, window = high, _WINDOW
            while end > low:
                start = max(low, end - window)
                if on_window is not None:
                    on_window(topic, partition, start)
                vector = _scan_window(consumer, topic, partition, start, end, timeout)
                if vector is not None:
                    found.append(vector)
                    break
                end, window = start, min(window * 4, 1 << 20)
    finally:
        consumer.close()
    return found
