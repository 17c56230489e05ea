"""Unit tests of which configs a target topic takes from its source topic (targets.kafka.topicconfig)."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_lfs_relay.config import parse_config
from kafka_lfs_relay.registry import TARGETS
from relay.errors import ConfigError
from targets.kafka.topicconfig import DEFAULT_INCLUDE, WIDEST, TopicConfigPolicy, differences, wanted
from targets.kafka.topics import positions_topic_problem

COMPACTED = {
    "cleanup.policy": "compact",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "max.message.bytes": "1048588",
    "min.compaction.lag.ms": "60000",
    "max.compaction.lag.ms": "9223372036854775807",
    "delete.retention.ms": "86400000",
    "message.timestamp.type": "LogAppendTime",
    "min.insync.replicas": "2",
    "segment.bytes": "1073741824",
    "message.timestamp.before.max.ms": "3600000",
}


def test_semantic_configs_are_copied_and_operational_ones_are_not() -> None:
    """Cleanup, retention, compaction and timestamp limits are taken from the source; replication and segments not."""
    got = wanted(COMPACTED, DEFAULT_INCLUDE, broker_max=1_048_588, producer_max=0)
    assert got == {
        "cleanup.policy": "compact",
        "retention.ms": "604800000",
        "retention.bytes": "-1",
        "min.compaction.lag.ms": "60000",
        "max.compaction.lag.ms": "9223372036854775807",
        "delete.retention.ms": "86400000",
        "message.timestamp.type": "CreateTime",
        "message.timestamp.before.max.ms": WIDEST,
        "message.timestamp.after.max.ms": WIDEST,
    }


@pytest.mark.parametrize(
    ("source", "after"),
    [
        ({"message.timestamp.after.max.ms": "10800000"}, "10800000"),  # a source raised above Kafka 4's hour
        ({"message.timestamp.after.max.ms": "3600000"}, "3600000"),
        ({"message.timestamp.difference.max.ms": "7200000"}, "7200000"),  # a source before Kafka 3.6
        ({}, WIDEST),  # nothing known about the source: no limit
    ],
)
def test_timestamp_limits_are_never_narrower_than_the_source_s(source: dict[str, str], after: str) -> None:
    """after.max.ms is the source's; before.max.ms has no limit, since a record reaches the target later."""
    keys = ["message.timestamp.before.max.ms", "message.timestamp.after.max.ms"]
    source = {**source, "message.timestamp.before.max.ms": "86400000"}
    assert wanted(source, keys, 0, 0) == {
        "message.timestamp.before.max.ms": WIDEST,
        "message.timestamp.after.max.ms": after,
    }


def test_a_timestamp_limit_differs_only_when_narrower() -> None:
    """A target limit at or above the wanted one takes every record the source took; a narrower one differs."""
    after, before = "message.timestamp.after.max.ms", "message.timestamp.before.max.ms"
    want = {after: "10800000", before: WIDEST}
    assert differences(want, {after: WIDEST, before: WIDEST}) == []
    assert differences(want, {after: "3600000", before: "86400000"}) == [
        (after, "10800000", "3600000"),
        (before, WIDEST, "86400000"),
    ]


@pytest.mark.parametrize(
    ("policy", "partitions", "problem"),
    [
        ("compact", 1, None),
        (" compact ", 1, None),
        ("compact,delete", 1, "has cleanup.policy=compact,delete; it must be exactly compact"),
        ("delete", 1, "has cleanup.policy=delete; it must be exactly compact"),
        (None, 1, "has cleanup.policy=?; it must be exactly compact"),
        ("compact", 2, "has 2 partitions; it must have exactly 1"),
    ],
)
def test_a_positions_topic_must_be_compacted_with_one_partition(
    policy: str | None, partitions: int, problem: str | None
) -> None:
    """Only cleanup.policy=compact and one partition is a positions topic the relay accepts."""
    found = positions_topic_problem(policy, partitions)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def test_timestamps_stay_the_source_s() -> None:
    """A LogAppendTime source still gives a CreateTime target: the relay writes the source's timestamps."""
    assert wanted({"message.timestamp.type": "LogAppendTime"}, ["message.timestamp.type"], 0, 0) == {
        "message.timestamp.type": "CreateTime"
    }


@pytest.mark.parametrize(
    ("source", "producer", "broker", "expected"),
    [
        (None, 0, 1_048_588, None),  # nothing to raise
        ("524288", 0, 1_048_588, None),  # a smaller source limit is not copied: the relay's batches must fit
        ("10485760", 0, 1_048_588, "10485760"),  # large records on the source must fit on the target
        (None, 2_200_000, 1_048_588, "2200000"),  # the relay's own producer limit (lfs threshold + headroom)
        ("10485760", 20_000_000, 1_048_588, "20000000"),
    ],
)
def test_max_message_bytes_is_raised_to_what_the_relay_sends(
    source: str | None, producer: int, broker: int, expected: str | None
) -> None:
    """max.message.bytes: the larger of the source's and the producer's limit, only when above the broker's."""
    configs = {} if source is None else {"max.message.bytes": source}
    got = wanted(configs, ["max.message.bytes"], broker, producer)
    assert got.get("max.message.bytes") == expected


def test_differences_name_what_differs() -> None:
    """A differing policy or retention is reported; a larger max.message.bytes and a reordered policy are not."""
    want = {"cleanup.policy": "compact,delete", "retention.ms": "1000", "max.message.bytes": "2000000"}
    have = {"cleanup.policy": "delete,compact", "retention.ms": "604800000", "max.message.bytes": "5000000"}
    assert differences(want, have) == [("retention.ms", "1000", "604800000")]
    assert differences({"cleanup.policy": "compact"}, {"cleanup.policy": "delete"}) == [
        ("cleanup.policy", "compact", "delete")
    ]
    assert differences({"max.message.bytes": "2000000"}, {"max.message.bytes": "1048588"}) == [
        ("max.message.bytes", "2000000", "1048588")
    ]


def _tree(**target: Any) -> dict[str, Any]:
    return {
        "sources": [{"name": "east", "bootstrap_servers": "east:9092"}],
        "topics": [{"source": "orders"}],
        "target": {"bootstrap_servers": "dr:9092", **target},
    }


def test_topic_config_settings_default_to_the_documented_list() -> None:
    """By default every semantic config is copied, nothing is synced and the cluster's replication factor is used."""
    kafka = parse_config(_tree()).target.kafka
    assert kafka is not None
    assert kafka.topic_configs == TopicConfigPolicy() and kafka.topic_configs.keys == DEFAULT_INCLUDE
    assert kafka.topic_configs.sync_interval == 0 and kafka.replication_factor == -1


def test_exclude_takes_names_out_of_include() -> None:
    """exclude removes names from the (default) include list; the sync interval and replication factor are read."""
    tree = _tree(replication_factor=3, topic_configs={"exclude": ["retention.ms"], "sync_interval": "5m"})
    kafka = parse_config(tree).target.kafka
    assert kafka is not None
    assert "retention.ms" not in kafka.topic_configs.keys and "cleanup.policy" in kafka.topic_configs.keys
    assert (kafka.topic_configs.sync_interval, kafka.replication_factor) == (300.0, 3)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ({"replication_factor": 0}, "target.replication_factor"),
        ({"replication_factor": -2}, "target.replication_factor"),
        ({"topic_configs": {"include": ["Retention MS"]}}, "target.topic_configs.include[0]"),
        ({"topic_configs": {"exclude": "retention.ms"}}, "target.topic_configs.exclude"),
        ({"topic_configs": {"sync": True}}, "target.topic_configs.sync"),
    ],
)
def test_bad_topic_config_settings_name_their_key(target: dict[str, Any], path: str) -> None:
    """A bad replication factor, config name or list is one error naming its key path."""
    with pytest.raises(ConfigError) as info:
        parse_config(_tree(**target))
    assert info.value.path == path


def test_only_the_kafka_target_copies_size_configs() -> None:
    """lfs and hydrate records are not their source records in size; the kafka target's are."""
    assert {name: t.same_records for name, t in TARGETS.items()} == {"kafka": True, "lfs": False, "hydrate": False}
