"""Mirroring with the real CLI between real clusters: complete, in order, resumable."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster
from tests.conftest import ClusterFactory, TopicFactory
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


def test_mirror_three_partitions_of_100k_records_in_order(
    tmp_path: Path, kafka_cluster: KafkaCluster, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """3 partitions x 100k records arrive on the target partition by partition, in order, exactly once."""
    target = cluster_factory("target")
    topic = topic_factory(kafka_cluster, partitions=3)
    records = numbered(300_000, 3)
    produce([kafka_cluster], topic, records)
    config = write_config(tmp_path / "relay.yml", relay_config([kafka_cluster], target, [{"source": topic}]))
    relay = RelayProcess(config, "--stop-at-end").start()
    assert relay.wait(300) == 0, relay.log_tail()
    assert_same(records_by_partition(records, 3), read_all(target, topic, 3))


def test_second_run_resumes_where_the_first_stopped(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A relay run after new records arrived relays only the new ones (resume from the target's data)."""
    topic = topic_factory(kafka_cluster, partitions=2)
    renamed = f"{topic}-copy"
    first, second = numbered(5_000, 2), numbered(3_000, 2, start=5_000)
    produce([kafka_cluster], topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": renamed}], stop_at_end=True),
    )
    relay = RelayProcess(config)
    assert relay.start().wait(120) == 0, relay.log_tail()
    produce([kafka_cluster], topic, second)
    assert relay.start().wait(120) == 0, relay.log_tail()
    assert_same(records_by_partition(first + second, 2), read_all(kafka_cluster, renamed, 2))


def test_existing_target_data_is_kept_and_not_mistaken_for_progress(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """With on_existing_data: append, records another producer wrote to the target topic stay, and every source
    record still arrives once."""
    topic = topic_factory(kafka_cluster, partitions=1)
    target_topic = topic_factory(kafka_cluster, partitions=1)
    foreign = [(0, b"foreign", f"other-{i}".encode()) for i in range(500)]
    produce([kafka_cluster], target_topic, foreign)
    records = numbered(2_000, 1)
    produce([kafka_cluster], topic, records)
    routes = [{"source": topic, "target": target_topic}]
    target = {"on_existing_data": "append"}
    config = write_config(
        tmp_path / "relay.yml", relay_config([kafka_cluster], kafka_cluster, routes, stop_at_end=True, target=target)
    )
    relay = RelayProcess(config)
    assert relay.start().wait(120) == 0, relay.log_tail()
    produce([kafka_cluster], target_topic, foreign)
    assert relay.start().wait(120) == 0, relay.log_tail()
    got = read_all(kafka_cluster, target_topic, 1)[0]
    assert [r for r in got if r[0] != b"foreign"] == [(k, v) for _, k, v in records]
    assert sum(1 for r in got if r[0] == b"foreign") == 1_000


def test_key_partitioning_resumes_exactly(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Under partition: key, a second run after more records relays each source record exactly once."""
    topic = topic_factory(kafka_cluster, partitions=3)
    target_topic = topic_factory(kafka_cluster, partitions=4)
    first, second = numbered(4_000, 3), numbered(2_000, 3, start=4_000)
    produce([kafka_cluster], topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster],
            kafka_cluster,
            [{"source": topic, "target": target_topic, "partition": "key"}],
            stop_at_end=True,
        ),
    )
    relay = RelayProcess(config)
    assert relay.start().wait(120) == 0, relay.log_tail()
    produce([kafka_cluster], topic, second)
    assert relay.start().wait(120) == 0, relay.log_tail()
    got = read_all(kafka_cluster, target_topic, 4)
    flat = sorted(r for recs in got.values() for r in recs)
    assert flat == sorted((k, v) for _, k, v in first + second)


def test_partitions_added_while_running_are_relayed(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A partition added to the source topic while the relay runs is found and relayed from its start."""
    from confluent_kafka.admin import AdminClient, NewPartitions

    from tests.integration.harness import committed_count, wait_for

    topic = topic_factory(kafka_cluster, partitions=2)
    target_topic = topic_factory(kafka_cluster, partitions=3)
    first = numbered(1_000, 2)
    produce([kafka_cluster], topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": target_topic}]),
    )
    relay = RelayProcess(config).start()
    wait_for("the first records", lambda: committed_count(kafka_cluster, target_topic, 3) >= 1_000, 60, relay)
    admin = AdminClient(kafka_cluster.client_conf())
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
    extra = [(2, f"new-{i}".encode(), f"new-value-{i}".encode()) for i in range(300)]
    produce([kafka_cluster], topic, extra)
    wait_for("the new partition's records", lambda: committed_count(kafka_cluster, target_topic, 3) >= 1_300, 60, relay)
    assert relay.terminate() == 0, relay.log_tail()
    expected = records_by_partition(first, 3)
    expected[2] = [(k, v) for _, k, v in extra]
    assert_same(expected, read_all(kafka_cluster, target_topic, 3))
