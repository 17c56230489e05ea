"""Per-partition fencing of the Kafka target: a zombie owner of a partition can no longer write it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.sandbox import KafkaCluster
from relay.message import Message, SourcePartition
from relay.metrics import RelayMetrics
from relay.run import Run
from relay.settings import Backoff, ClusterConfig, TopicConfig
from targets import kafka
from targets.context import TargetContext
from targets.kafka import BatchConfig, KafkaTarget, KafkaTargetConfig
from tests.conftest import TopicFactory
from tests.integration.harness import read_all

pytestmark = pytest.mark.integration


def _target(cluster: KafkaCluster, topic: str) -> KafkaTarget:
    config = KafkaTargetConfig(
        cluster=ClusterConfig("target", cluster.bootstrap_servers),
        batch=BatchConfig(max_records=1000, linger=0.01),
        retry=Backoff(0.05, 0.5),
        transaction_timeout=30.0,
    )
    context = TargetContext("fencing-test", (TopicConfig("orders", topic, "preserve"),), 256 << 20, group=True)
    return kafka.build(config, context, RelayMetrics())


def _runs(topic: str, offsets: range) -> list[Run]:
    """One run of built records (as a transform keeps them), bound for ``topic``."""
    messages = [Message(f"k{o}".encode(), f"v{o}".encode(), (), topic, "src", "orders", 0, o, 0, 64) for o in offsets]
    sp = SourcePartition("orders", 0)
    return [Run("src", sp, topic, messages, offsets.stop, 64 * len(messages), messages)]


class _Acks:
    """Collects the source offsets of what a target acknowledges."""

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def acked(self, runs: Sequence[Run]) -> None:
        self.offsets += [msg.source_offset for run in runs for msg in run.records]

    def failed(self) -> None:
        """Nothing waits here."""


def test_new_owner_fences_the_old_one_and_nothing_is_written_twice(
    kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """After a second owner claims a partition, the first one's writes to it are refused and never acknowledged."""
    topic = topic_factory(kafka_cluster, partitions=1)
    sp = SourcePartition("orders", 0)
    old, new = _target(kafka_cluster, topic), _target(kafka_cluster, topic)
    acked_old, acked_new = _Acks(), _Acks()
    try:
        assert old.high_watermarks([sp]) == {}
        old.start(acked_old)
        old.write_runs(_runs(topic, range(100)), more=False)
        assert old.flush(30)
        assert new.high_watermarks([sp]) == {sp: 100}
        new.start(acked_new)
        old.write_runs(_runs(topic, range(100, 200)), more=False)
        assert old.flush(30)
        new.write_runs(_runs(topic, range(100, 200)), more=False)
        assert new.flush(30)
    finally:
        old.close()
        new.close()
    assert acked_old.offsets == list(range(100))
    assert acked_new.offsets == list(range(100, 200))
    assert read_all(kafka_cluster, topic, 1)[0] == [(f"k{o}".encode(), f"v{o}".encode()) for o in range(200)]


def test_a_member_handed_a_share_creates_the_target_topic_with_the_source_partition_count(
    kafka_cluster: KafkaCluster,
) -> None:
    """A group member assigned partitions 0 and 2 of a 6-partition source topic creates its missing target topic
    with 6 partitions, not 3 (which would stay too small for partition: preserve)."""
    topic = f"created-{uuid.uuid4().hex[:10]}"
    asked: list[list[str]] = []

    def source_partitions(topics: Sequence[str]) -> dict[str, int]:
        asked.append(list(topics))
        return {"orders": 6}

    config = KafkaTargetConfig(cluster=ClusterConfig("target", kafka_cluster.bootstrap_servers))
    context = TargetContext(
        "share-test", (TopicConfig("orders", topic, "preserve"),), 256 << 20, group=True,
        source_partitions=source_partitions,
    )  # fmt: skip
    target = kafka.build(config, context, RelayMetrics())
    try:
        assert target.high_watermarks([SourcePartition("orders", 0), SourcePartition("orders", 2)]) == {}
    finally:
        target.close()
    assert asked == [["orders"]]
    admin = AdminClient(kafka_cluster.client_conf())
    assert len(admin.list_topics(topic, timeout=30).topics[topic].partitions) == 6
