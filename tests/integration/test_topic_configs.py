"""Target topics like their source: created with its partitions and semantic configs, checked, kept in sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from kafka_lfs_relay.cli import main
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
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

SOURCE_CONFIGS = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "1000",
    "delete.retention.ms": "3600000",
    "retention.ms": "123456789",
    "max.message.bytes": "2000000",
    "message.timestamp.type": "LogAppendTime",
    "segment.bytes": "10485760",  # storage tuning: not copied
}


def topic_configs(cluster: KafkaCluster, topic: str) -> dict[str, str]:
    admin = AdminClient(cluster.client_conf())
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(30)
    return {k: str(e.value) for k, e in entries.items() if e.value is not None}


def partition_count(cluster: KafkaCluster, topic: str) -> int:
    return len(AdminClient(cluster.client_conf()).list_topics(topic, timeout=30).topics[topic].partitions)


def test_a_compacted_source_topic_is_mirrored_into_a_compacted_topic_created_like_it(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """The target topic the relay creates has the source's partition count, cleanup policy, compaction and
    retention settings and record size limit, with CreateTime timestamps; the records arrive exactly once."""
    topic = topic_factory(kafka_cluster, partitions=3, config=SOURCE_CONFIGS)
    target_topic = f"{topic}-mirror"
    rows = numbered(600, 3)
    produce([kafka_cluster], topic, rows)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": target_topic}], name=topic),
    )
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 0, relay.log_tail()
    assert partition_count(kafka_cluster, target_topic) == 3
    got = topic_configs(kafka_cluster, target_topic)
    assert {k: got[k] for k in SOURCE_CONFIGS if k != "segment.bytes"} == {
        **{k: v for k, v in SOURCE_CONFIGS.items() if k != "segment.bytes"},
        "message.timestamp.type": "CreateTime",  # the records keep the source's (append) timestamps
    }
    assert got["segment.bytes"] != SOURCE_CONFIGS["segment.bytes"]
    assert_same(records_by_partition(rows, 3), read_all(kafka_cluster, target_topic, 3))


def test_check_reports_a_target_topic_that_differs_and_the_sync_option_aligns_it(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """check names a deleting target topic of a compacted source as a problem and a different retention as a
    warning; with target.topic_configs.sync_interval the running relay sets them like the source."""
    topic = topic_factory(kafka_cluster, partitions=1, config={"cleanup.policy": "compact", "retention.ms": "5000000"})
    target_topic = topic_factory(kafka_cluster, partitions=1, config={"retention.ms": "7000000"})
    produce([kafka_cluster], topic, numbered(50, 1))
    routes = [{"source": topic, "target": target_topic}]
    checked = write_config(tmp_path / "check.yml", relay_config([kafka_cluster], kafka_cluster, routes, name=topic))
    capsys.readouterr()
    assert main(["check", "--config", str(checked)]) == 1
    out = capsys.readouterr().out
    problem = f"PROBLEM target topic {target_topic!r} has cleanup.policy=delete; from source topic {topic!r}"
    assert f"{problem} it should be compact" in out, out
    assert f"warn    target topic {target_topic!r} has retention.ms=7000000" in out

    synced = write_config(
        tmp_path / "sync.yml",
        relay_config(
            [kafka_cluster], kafka_cluster, routes, name=topic,
            target={"topic_configs": {"sync_interval": "1s", "exclude": ["retention.ms"]}},
        ),
    )  # fmt: skip
    relay = RelayProcess(synced).start()
    try:
        wait_for(
            "the target topic compacted like its source",
            lambda: topic_configs(kafka_cluster, target_topic)["cleanup.policy"] == "compact",
            30,
            relay,
        )
    finally:
        assert relay.terminate() == 0, relay.log_tail()
    assert topic_configs(kafka_cluster, target_topic)["retention.ms"] == "7000000"  # excluded: left as it was
    assert "target topic config set like its source" in relay.log_text()
    capsys.readouterr()
    assert main(["check", "--config", str(synced)]) == 0
    assert "PROBLEM" not in capsys.readouterr().out
