"""Operations tests: a feed that keeps records flowing while a test operates on topics and relays, and the
record-by-record comparison of every field (key, value with null distinct from empty, headers in order,
timestamp, partition)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster
from tests.integration.harness import RelayProcess
from tests.readback import read_to_end

Headers = tuple[tuple[str, bytes | None], ...]
Full = tuple[bytes | None, bytes | None, Headers, int]
"""key, value, headers, timestamp of one record; the partition is the key of the dict holding it."""
FullByPartition = dict[int, list[Full]]

# An hour ago: recent enough that no retention a topic takes from its source (7 days by default)
# deletes the records while a test runs (stamped years back, they were, a segment at a time).
_BASE_TS = int(time.time() * 1000) - 3_600_000


def varied(i: int) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, int]:
    """Record ``i`` of a feed: null, empty and plain keys and values (tombstones too), duplicate and null-valued
    headers, and timestamps that go back now and then (out of order, as event times do)."""
    key = (None, b"", f"key-{i}".encode())[i % 3]
    value = (f"value-{i}".encode(), b"", None, f"value-{i}-".encode() * 3)[i % 4]
    headers: list[tuple[str, bytes | None]] | None = (
        None,
        [("h", b"1"), ("h", b"2"), ("empty", b""), ("null", None)],
        [("trace", f"{i}".encode())],
    )[i % 3]
    ts = _BASE_TS + i * 10 - (5_000 if i % 7 == 3 else 0)
    return key, value, headers, ts


class Feed:
    """Produces :func:`varied` records to every partition of a topic from a thread until stopped.

    ``partitions`` is read again before every round, so a partition added meanwhile is fed too; a
    round that fails (the topic is being deleted) is retried after a pause, never counted.
    """

    def __init__(self, cluster: KafkaCluster, topic: str, partitions: Callable[[], int], per_round: int = 20) -> None:
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.per_round = per_round
        self.sent = 0
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Feed:
        """Start feeding."""
        self._thread.start()
        return self

    def _producer(self) -> FeedProducer:
        producer = FeedProducer({**self.cluster.client_config(), "enable.idempotence": True, "linger.ms": 5})
        producer.list_topics(self.topic, timeout=10)  # knows every partition before the first record
        return producer

    def _run(self) -> None:
        producer = self._producer()
        i = 0
        try:
            while not self._stop.is_set():
                if self._paused.is_set():
                    self._idle.set()
                    time.sleep(0.05)
                    continue
                if self._idle.is_set():  # resumed: the topic may have been recreated, which a client does not follow
                    producer = self._producer()
                    self._idle.clear()
                count = self.partitions()
                if count > len(producer.list_topics(self.topic, timeout=10).topics[self.topic].partitions):
                    producer = self._producer()  # a partition was added: a client learns of it only later
                for _ in range(self.per_round):
                    key, value, headers, ts = varied(i)
                    producer.send(self.topic, value, key, partition=i % count, headers=headers, timestamp=ts)
                    i += 1
                producer.flush_all(30)
                self.sent = i
                time.sleep(0.1)
        except BaseException as exc:  # reported by stop(): a feed that failed must fail its test
            self.error = exc

    def pause(self) -> None:
        """Stop producing (for an operation on the source topic) and wait until no round is in flight."""
        self._paused.set()
        assert self._idle.wait(60), "the feed did not pause"

    def resume(self) -> None:
        """Produce again."""
        self._paused.clear()

    def stop(self) -> int:
        """Stop feeding; returns how many records were sent; raises what the feed ran into."""
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise AssertionError(f"the feed failed: {self.error}")
        return self.sent


def full(cluster: KafkaCluster, topic: str, partitions: int) -> FullByPartition:
    """Every committed record of ``topic`` per partition, with every field (none while the relay has not
    created the topic yet: a reader assigned to a topic that does not exist waits for it)."""
    if partition_count(cluster, topic) == 0:
        return {p: [] for p in range(partitions)}
    found = read_to_end(cluster.client_config(), topic, partitions, batch=5000)
    return {
        p: [(m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]) for m in msgs] for p, msgs in found.items()
    }


def assert_copied(want: FullByPartition, have: FullByPartition) -> None:
    """The same records per partition, in order, once each, every field equal; names the first difference."""
    assert sorted(want) == sorted(have), f"partitions differ: {sorted(want)} != {sorted(have)}"
    for p in sorted(want):
        w, h = want[p], have[p]
        if w == h:
            continue
        first = next((i for i, (a, b) in enumerate(zip(w, h, strict=False)) if a != b), min(len(w), len(h)))
        missing = len(set(w) - set(h))
        raise AssertionError(
            f"partition {p}: expected {len(w)} records, got {len(h)} ({missing} distinct missing); first "
            f"difference at index {first}: {w[first : first + 1]} != {h[first : first + 1]}"
        )


def partition_count(cluster: KafkaCluster, topic: str) -> int:
    """Partitions of ``topic`` now (0: it does not exist)."""
    md = AdminClient(cluster.client_conf()).list_topics(topic, timeout=10)
    tmd = md.topics.get(topic)
    return 0 if tmd is None or tmd.error is not None else len(tmd.partitions)


def add_partitions(cluster: KafkaCluster, topic: str, total: int) -> None:
    """Grow ``topic`` to ``total`` partitions."""
    admin = AdminClient(cluster.client_conf())  # held until the answer: a dropped client aborts its requests
    admin.create_partitions([NewPartitions(topic, total)])[topic].result(30)


def delete_topic(cluster: KafkaCluster, topic: str) -> None:
    """Delete ``topic`` and wait until it is gone from the metadata."""
    admin = AdminClient(cluster.client_conf())
    admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    deadline = time.monotonic() + 60
    while partition_count(cluster, topic):
        assert time.monotonic() < deadline, f"topic {topic} was not deleted within 60 s"
        time.sleep(0.2)


def recreate_topic(cluster: KafkaCluster, topic: str, partitions: int) -> None:
    """Delete ``topic`` and create it again, empty (creation is retried while the deletion completes)."""
    delete_topic(cluster, topic)
    admin = AdminClient(cluster.client_conf())
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)[topic].result(60)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def events(relay: RelayProcess, event: str) -> list[dict[str, Any]]:
    """The relay's JSON log lines whose event is ``event``."""
    out = []
    for line in relay.log_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                out.append(entry)
    return out


def last_line(relay: RelayProcess) -> str:
    """The relay's last line that is not a JSON log line: the one-line error it ended with."""
    plain = [line for line in relay.log_text().splitlines() if line.startswith("kafka-lfs-relay:")]
    return plain[-1] if plain else ""
