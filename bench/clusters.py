"""Fresh sandbox clusters for a scenario, their topics, and the records written to them.

Rates
  Target topics are created with ``message.timestamp.type=LogAppendTime``, so every record on the
  target carries the broker's append time whoever wrote it. The *steady* rate is records divided
  by the time from the first to the last record appended to the target (it leaves out process
  start-up: JVM, connector start, Python imports); the *wall* rate divides by the time from process
  start to the work being done. Both are reported; the tables show the steady rate.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from bench.paths import WORK
from bench.results import MIB, log
from kafka_lfs_relay.sandbox import KafkaCluster, kafka_distribution

RECORD_SIZE = 1024
# Producer batching shared by every contender that writes to the target (it is our relay's own).
PRODUCER_BATCHING = {"linger.ms": "5", "batch.size": "1000000", "compression.type": "lz4", "acks": "all"}
# Fetch sizes of our relay's source consumer, given to every contender that reads the source.
CONSUMER_FETCH = {"fetch.max.bytes": str(64 * MIB), "max.partition.fetch.bytes": str(8 * MIB)}


@contextlib.contextmanager
def fresh_clusters(names: Sequence[str], scenario: str) -> Iterator[dict[str, KafkaCluster]]:
    """Start brand-new sandbox clusters (fresh data directories) and stop them all at the end."""
    root = WORK / f"{scenario}-{uuid.uuid4().hex[:6]}"
    dist = kafka_distribution()
    clusters: dict[str, KafkaCluster] = {}
    try:
        for name in names:
            log(f"starting cluster {name}")
            cluster = KafkaCluster.create(name, root / name, dist)
            clusters[name] = cluster
            cluster.start()
        yield clusters
    finally:
        for cluster in reversed(list(clusters.values())):
            with contextlib.suppress(Exception):
                cluster.resume()
                cluster.stop(grace=20)
        shutil.rmtree(root, ignore_errors=True)


def admin(cluster: KafkaCluster) -> AdminClient:
    """An AdminClient for ``cluster``."""
    return AdminClient(cluster.client_conf())


def create_topic(cluster: KafkaCluster, name: str, partitions: int, config: dict[str, str] | None = None) -> None:
    """Create a topic (replication factor 1) and wait for it."""
    client = admin(cluster)  # kept referenced until the future completes
    fut = client.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)
    fut[name].result(timeout=60)


LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}


def delete_topics(cluster: KafkaCluster, keep: Sequence[str] = ()) -> None:
    """Delete every non-internal topic except ``keep`` and wait until they are gone."""
    client = admin(cluster)
    names = [t for t in client.list_topics(timeout=15).topics if not t.startswith("__") and t not in keep]
    if not names:
        return
    for fut in client.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            fut.result(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = set(names) & set(client.list_topics(timeout=15).topics)
        if not left:
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics not deleted on {cluster.name}: {sorted(left)}")


def end_offsets(cluster: KafkaCluster, topic: str, partitions: int) -> list[int]:
    """High watermarks of every partition."""
    consumer = Consumer({**cluster.client_conf(), "group.id": "bench-offsets"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


class OffsetWatcher:
    """Polls the sum of a topic's end offsets (a cheap way to see a copy finish)."""

    def __init__(self, cluster: KafkaCluster, topic: str, partitions: int) -> None:
        self.consumer = Consumer({**cluster.client_conf(), "group.id": "bench-watch"})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self) -> int:
        """Sum of the high watermarks now (0 for a partition that does not answer)."""
        total = 0
        for tp in self.tps:
            with contextlib.suppress(KafkaException):
                total += self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1]
        return total

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


def append_span(cluster: KafkaCluster, topic: str, partitions: int) -> tuple[float, float]:
    """(first, last) broker append time in seconds of a LogAppendTime topic, via ListOffsets."""
    client = admin(cluster)
    first = {TopicPartition(topic, p): OffsetSpec.for_timestamp(0) for p in range(partitions)}
    last = {TopicPartition(topic, p): OffsetSpec.max_timestamp() for p in range(partitions)}
    firsts = [f.result(timeout=30).timestamp for f in client.list_offsets(first, request_timeout=30).values()]
    lasts = [f.result(timeout=30).timestamp for f in client.list_offsets(last, request_timeout=30).values()]
    firsts = [t for t in firsts if t >= 0]
    lasts = [t for t in lasts if t >= 0]
    if not firsts or not lasts:
        raise RuntimeError(f"{topic} on {cluster.name} holds no timestamped records")
    return min(firsts) / 1000, max(lasts) / 1000


# -- data ------------------------------------------------------------------------------------------
HEADER_NAME = "source"
HEADER_VALUE = "bench"
JSON_FIELD = "a.b"
JSON_VALUE = "keep"


def make_values(count: int, size: int = RECORD_SIZE, distinct: int = 4096) -> Callable[[int], bytes]:
    """A function i -> a ``size``-byte JSON value with ``{"a": {"b": "keep"}}`` and random padding.

    The padding is random base64 text, so lz4 compresses it about as little as it does the
    random letters of Kafka's ``kafka-producer-perf-test``.
    """
    import base64

    pads = [base64.b64encode(os.urandom(size)).decode()[:size] for _ in range(min(count, distinct))]
    head = '{"id":"%010d","a":{"b":"keep"},"pad":"'
    room = size - len(head % 0) - 2

    def value(i: int) -> bytes:
        return (head % i + pads[i % len(pads)][:room] + '"}').encode()

    assert len(value(0)) == size
    return value


def fill_topic(
    clusters: Sequence[KafkaCluster],
    topic: str,
    count: int,
    partitions: int,
    size: int = RECORD_SIZE,
    with_header: bool = True,
) -> float:
    """Write ``count`` records round-robin over ``partitions`` to every cluster (same order); returns seconds."""
    value = make_values(count, size)
    headers = [(HEADER_NAME, HEADER_VALUE.encode())] if with_header else None
    producers = [
        Producer(
            {
                **c.client_conf(),
                **PRODUCER_BATCHING,
                "linger.ms": 20,
                "enable.idempotence": True,
                "queue.buffering.max.messages": 500_000,
                "queue.buffering.max.kbytes": 1_048_576,
            }
        )
        for c in clusters
    ]
    started = time.monotonic()
    ts = int(time.time() * 1000)
    for i in range(count):
        v = value(i)
        for producer in producers:
            while True:
                try:
                    producer.produce(topic, v, None, partition=i % partitions, headers=headers, timestamp=ts)
                    break
                except BufferError:
                    producer.poll(0.05)
        if i % 10_000 == 0:
            ts = int(time.time() * 1000)
            for producer in producers:
                producer.poll(0)
    for producer in producers:
        if producer.flush(300) != 0:
            raise RuntimeError(f"could not write {topic}")
    return time.monotonic() - started
