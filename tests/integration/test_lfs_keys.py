"""Object keys of the offloading target against real Kafka and SeaweedFS: relays and topic incarnations never meet.

An object a committed envelope points to is never overwritten with other bytes: not by another relay
sharing the bucket with the same topic names, not by a recreated source topic whose offsets start
again, and not over an object someone else put at the key (the relay stops, naming it).
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.sandbox import KafkaCluster
from kafka_lfs_relay.sandbox.s3 import S3Server
from tests.conftest import ClusterFactory
from tests.integration.harness import RelayProcess, relay_config, wait_for, write_config
from tests.integration.lfs_harness import (
    MIB,
    assert_mirrored,
    big_topic,
    count_target,
    list_keys,
    object_bytes,
    payload,
    produce_sized,
    read_target,
    s3_section,
    topic_pair,
)

pytestmark = pytest.mark.integration

PLAN = [(0, 2 * MIB), (1, 100), (1, 6 * MIB), (0, 3 * MIB + 1), (0, 12 * MIB)]


def offload_config(
    path: Path, cluster: KafkaCluster, source: str, target: str, name: str, s3: dict[str, Any], **target_extra: Any
) -> Path:
    """An lfs relay called ``name`` from ``source`` to ``target`` on ``cluster``, 5 MiB parts."""
    config = relay_config(
        [cluster],
        cluster,
        [{"source": source, "target": target}],
        name=name,
        target={
            "type": "lfs",
            "kafka": {"message.max.bytes": str(100 * MIB)},
            "lfs": {"part_size": "5MiB", "s3": s3},
            "retry": {"backoff": {"min": "100ms", "max": "2s"}},
            **target_extra,
        },
    )
    return write_config(path, config)


def test_two_relays_with_the_same_topic_names_share_a_bucket_and_never_meet(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, cluster_factory: ClusterFactory
) -> None:
    """Two relays, two clusters, one topic name, one bucket and prefix, running at once: every envelope of each
    names its own object, with its own bytes, whether the two payloads at an offset differ or not."""
    other = cluster_factory("other")
    src = f"shared-{uuid.uuid4().hex[:8]}"
    client, bucket = s3_server.client(), s3_server.bucket
    prefix = f"two-{uuid.uuid4().hex[:8]}"
    relays, sources = [], []
    for i, cluster in enumerate((kafka_cluster, other)):
        big_topic(cluster, 2, name=src)
        big_topic(cluster, 2, name=f"{src}-out")
        # The first records are the same bytes on both clusters, the later ones differ.
        produced = produce_sized(cluster, src, PLAN, seed=31) + produce_sized(cluster, src, PLAN, seed=32 + i)
        sources.append(produced)
        s3 = s3_section(s3_server, prefix)
        config = offload_config(tmp_path / f"relay-{i}.yml", cluster, src, f"{src}-out", f"relay-{i}-{prefix}", s3)
        relays.append(RelayProcess(config, "--stop-at-end").start())
    for relay in relays:
        assert relay.wait(240) == 0, relay.log_tail()
    keys = [
        assert_mirrored(produced, read_target(cluster, f"{src}-out", 2), client, bucket, threshold=MIB)
        for produced, cluster in zip(sources, (kafka_cluster, other), strict=True)
    ]
    assert keys[0].isdisjoint(keys[1]), "two relays wrote the same key"
    assert list_keys(client, bucket, prefix) == keys[0] | keys[1]


def delete_topic(cluster: KafkaCluster, topic: str) -> None:
    """Delete ``topic`` and wait until the cluster no longer lists it."""
    admin = AdminClient(cluster.client_conf())
    admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=60)
    wait_for(f"topic {topic} deleted", lambda: topic not in admin.list_topics(timeout=10).topics, 60)


def test_a_recreated_source_topic_gets_keys_of_its_own(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """A source topic deleted and recreated with other records at the same offsets: the relay's envelopes of the
    first topic still name their own payloads, those of the second name new objects."""
    src, first_out = topic_pair(kafka_cluster, 2)
    client, bucket = s3_server.client(), s3_server.bucket
    prefix = f"recreate-{uuid.uuid4().hex[:8]}"
    name = f"relay-{prefix}"
    s3 = s3_section(s3_server, prefix)
    first = produce_sized(kafka_cluster, src, PLAN, seed=41)
    config = offload_config(tmp_path / "first.yml", kafka_cluster, src, first_out, name, s3)
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(240) == 0, relay.log_tail()

    delete_topic(kafka_cluster, src)
    big_topic(kafka_cluster, 2, name=src)
    second = produce_sized(kafka_cluster, src, PLAN, seed=42)
    # The same relay, its positions reset (a new positions topic: the old ones point past the new topic's
    # records), into a second target topic so the two generations of envelopes can be told apart.
    second_out = big_topic(kafka_cluster, 2, name=f"{src}-out2")
    config = offload_config(
        tmp_path / "second.yml", kafka_cluster, src, second_out, name, s3, positions_topic=f"positions-{prefix}"
    )
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(240) == 0, relay.log_tail()

    old = assert_mirrored(first, read_target(kafka_cluster, first_out, 2), client, bucket, threshold=MIB)
    new = assert_mirrored(second, read_target(kafka_cluster, second_out, 2), client, bucket, threshold=MIB)
    assert old.isdisjoint(new), "the recreated topic's records were written over the first topic's objects"
    assert list_keys(client, bucket, prefix) == old | new


def test_other_bytes_at_a_key_stop_the_relay_and_the_same_bytes_are_taken_as_stored(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """An object someone else put at the key a record needs: the relay stops naming bucket and key and leaves the
    object alone. The record's own bytes at that key (an earlier attempt) are used as they are."""
    src, out = topic_pair(kafka_cluster, 1)
    produce_sized(kafka_cluster, src, [(0, 2 * MIB)], seed=51)
    value = payload(51 * 1_000_003, 2 * MIB)
    client, bucket = s3_server.client(), s3_server.bucket
    prefix = f"squat-{uuid.uuid4().hex[:8]}"
    name = f"relay-{prefix}"
    key = f"{prefix}/{name}/{src}/0/0-{hashlib.sha256(value).hexdigest()}"
    client.put_object(Bucket=bucket, Key=key, Body=b"squatter")
    config = offload_config(tmp_path / "relay.yml", kafka_cluster, src, out, name, s3_section(s3_server, prefix))
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 1, relay.log_tail()
    assert f"S3 object s3://{bucket}/{key} already holds other bytes" in relay.log_text(), relay.log_tail()
    assert object_bytes(client, bucket, key) == b"squatter"
    assert count_target(kafka_cluster, out, 1) == 0

    client.put_object(Bucket=bucket, Key=key, Body=value, ContentType="x/earlier-attempt")
    assert relay.start().wait(120) == 0, relay.log_tail()
    target = read_target(kafka_cluster, out, 1)
    assert len(target[0]) == 1 and key.encode() in (target[0][0].value or b"")
    assert client.head_object(Bucket=bucket, Key=key)["ContentType"] == "x/earlier-attempt"
