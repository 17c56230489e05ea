"""Target topics like their source: created with its partitions and semantic configs, checked, kept in sync."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

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
from tests.integration.hydrate_support import Rec, assert_records, produce_records, read_records

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


HOUR_MS = 3_600_000


def _stamped(count: int, start: int, now: int) -> list[Rec]:
    """Records over 2 partitions stamped from 30 days back to 2 h ahead, with null and empty keys and values."""
    offsets = [-30 * 24 * HOUR_MS, 2 * HOUR_MS, 0, -HOUR_MS, 2 * HOUR_MS - 60_000]
    out = []
    for i in range(start, start + count):
        key = None if i % 7 == 0 else b"" if i % 7 == 1 else f"key-{i}".encode()
        value = None if i % 11 == 0 else b"" if i % 11 == 1 else f"value-{i}".encode()
        headers = (("h", f"{i}".encode()), ("h", None)) if i % 3 else ()
        out.append(Rec(i % 2, key, value, headers, now + offsets[i % len(offsets)]))
    return out


def test_records_stamped_hours_ahead_that_the_source_accepts_are_mirrored_into_the_topic_it_creates(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A source that accepts timestamps 3 h ahead gets a target topic with that limit and no limit behind,
    so records stamped 2 h ahead and 30 days back, produced while the relay runs, all arrive exactly once."""
    topic = topic_factory(kafka_cluster, partitions=2, config={"message.timestamp.after.max.ms": str(3 * HOUR_MS)})
    target_topic = f"{topic}-mirror"
    now = int(time.time() * 1000)
    first, second = _stamped(40, 0, now), _stamped(40, 40, now)
    produce_records(kafka_cluster, topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": target_topic}], name=topic),
    )
    relay = RelayProcess(config).start()
    try:
        wait_for("the first records on the target", lambda: _count(kafka_cluster, target_topic) >= 40, 60, relay)
        produce_records(kafka_cluster, topic, second)
        wait_for("every record on the target", lambda: _count(kafka_cluster, target_topic) >= 80, 60, relay)
    finally:
        assert relay.terminate() == 0, relay.log_tail()
    assert_records(first + second, read_records(kafka_cluster, target_topic, 2))
    got = topic_configs(kafka_cluster, target_topic)
    assert got["message.timestamp.after.max.ms"] == str(3 * HOUR_MS)
    assert got["message.timestamp.before.max.ms"] == str(2**63 - 1)


def test_a_target_topic_that_refuses_future_timestamps_is_reported_and_stops_the_relay_until_raised(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """check names a target topic whose 1 h limit is narrower than its source's 3 h; the relay copies the records
    before one stamped 2 h ahead, stops with the line naming it, and after the limit is raised copies the rest."""
    topic = topic_factory(kafka_cluster, partitions=1, config={"message.timestamp.after.max.ms": str(3 * HOUR_MS)})
    target_topic = topic_factory(kafka_cluster, partitions=1, config={"message.timestamp.after.max.ms": str(HOUR_MS)})
    now = int(time.time() * 1000)
    records = [Rec(0, f"key-{i}".encode(), f"value-{i}".encode(), (), now - 1000 + i) for i in range(30)]
    records[20] = dataclasses.replace(records[20], timestamp=now + 2 * HOUR_MS)
    produce_records(kafka_cluster, topic, records)
    routes = [{"source": topic, "target": target_topic}]
    config = write_config(tmp_path / "relay.yml", relay_config([kafka_cluster], kafka_cluster, routes, name=topic))
    capsys.readouterr()
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert (
        f"PROBLEM target topic {target_topic!r} has message.timestamp.after.max.ms={HOUR_MS}; from source topic "
        f"{topic!r} it should be at least {3 * HOUR_MS}: it would refuse records the source accepts"
    ) in out, out

    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 1, relay.log_tail()
    last = relay.log_text().strip().splitlines()[-1]
    # The broker refuses the whole record batch; the line names a record of it (the largest).
    assert last.startswith(f"kafka-lfs-relay: target rejected record {kafka_cluster.name}/{topic}/0@"), last
    assert last.endswith(": Broker: Invalid timestamp"), last
    copied = read_records(kafka_cluster, target_topic, 1)
    assert copied == records[: len(copied)] and len(copied) <= 20  # a prefix: nothing after the refused record

    admin = AdminClient(kafka_cluster.client_conf())
    raise_limit = ConfigResource(
        ResourceType.TOPIC,
        target_topic,
        incremental_configs=[
            ConfigEntry("message.timestamp.after.max.ms", str(3 * HOUR_MS), incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([raise_limit])[raise_limit].result(30)
    assert relay.start().wait(120) == 0, relay.log_tail()
    assert_records(records, read_records(kafka_cluster, target_topic, 1))


def _count(cluster: KafkaCluster, topic: str) -> int:
    """Committed records of ``topic`` (0 while it does not exist)."""
    return len(read_records(cluster, topic, partition_count(cluster, topic))) if _exists(cluster, topic) else 0


def _exists(cluster: KafkaCluster, topic: str) -> bool:
    return topic in AdminClient(cluster.client_conf()).list_topics(timeout=30).topics
