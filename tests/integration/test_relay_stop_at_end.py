"""--stop-at-end terminates on empty, caught-up and gapped logs, and relays exactly what was committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.sandbox import KafkaCluster
from tests.conftest import TopicFactory
from tests.integration.harness import (
    RelayProcess,
    assert_same,
    numbered,
    produce,
    read_all,
    records_by_partition,
    relay_config,
    write_config,
)

pytestmark = pytest.mark.integration


def _run_to_end(tmp_path: Path, cluster: KafkaCluster, topic: str, target_topic: str) -> RelayProcess:
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([cluster], cluster, [{"source": topic, "target": target_topic}], stop_at_end=True),
    )
    relay = RelayProcess(config).start()
    assert relay.wait(90) == 0, relay.log_tail()
    return relay


def test_empty_topic_terminates_with_nothing_relayed(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A topic with no records ends the run at once, exit 0, and the target stays empty."""
    topic = topic_factory(kafka_cluster, partitions=3)
    _run_to_end(tmp_path, kafka_cluster, topic, f"{topic}-copy")
    assert read_all(kafka_cluster, f"{topic}-copy", 3) == {0: [], 1: [], 2: []}


def test_caught_up_topic_terminates_and_writes_nothing_more(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A second run over a topic that is already fully relayed exits 0 and adds nothing."""
    topic = topic_factory(kafka_cluster, partitions=2)
    records = numbered(3_000, 2)
    produce([kafka_cluster], topic, records)
    _run_to_end(tmp_path, kafka_cluster, topic, f"{topic}-copy")
    relay = _run_to_end(tmp_path, kafka_cluster, topic, f"{topic}-copy")
    assert "from_target" in relay.log_text()
    assert_same(records_by_partition(records, 2), read_all(kafka_cluster, f"{topic}-copy", 2))


def test_gapped_log_with_aborted_transactions_and_deleted_head_terminates(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A log that starts past 0, holds aborted transactions and ends in a marker is relayed exactly and ends."""
    topic = topic_factory(kafka_cluster, partitions=1)
    producer = Producer({**kafka_cluster.client_conf(), "transactional.id": f"gaps-{topic}"})
    producer.init_transactions(30)
    committed: list[tuple[int, bytes, bytes]] = []
    for round_ in range(6):
        producer.begin_transaction()
        batch = numbered(100, 1, start=round_ * 100)
        for _, key, value in batch:
            producer.produce(topic, value, key, partition=0)
        if round_ % 2:
            # Flushed first, so the aborted records are in the log (the point of this test), and
            # because an abort racing the partition's AddPartitionsToTxn fails with a fatal
            # INVALID_TXN_STATE (librdkafka issue #4849).
            assert producer.flush(30) == 0
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            committed.extend(batch)
    admin = AdminClient(kafka_cluster.client_conf())
    deleted = admin.delete_records([TopicPartition(topic, 0, 50)])
    for fut in deleted.values():
        fut.result(30)
    survivors = committed[50:]
    _run_to_end(tmp_path, kafka_cluster, topic, f"{topic}-copy")
    assert_same(records_by_partition(survivors, 1), read_all(kafka_cluster, f"{topic}-copy", 1))
