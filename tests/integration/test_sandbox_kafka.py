"""The sandbox's Kafka clusters are real brokers that keep data and refuse bad credentials."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster
from relay.logs import librdkafka_logger
from tests.conftest import ClusterFactory, TopicFactory

pytestmark = pytest.mark.integration


def _produce(cluster: KafkaCluster, topic: str, count: int, partitions: int) -> list[tuple[int, bytes, bytes]]:
    producer = FeedProducer({**cluster.client_config(), "linger.ms": 5, "enable.idempotence": True})
    sent = []
    for i in range(count):
        key, value = f"k{i}".encode(), f"value-{i}".encode()
        producer.produce(topic, value, key, partition=i % partitions, headers=[("h", str(i).encode())])
        sent.append((i % partitions, key, value))
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush_all(30)
    return sent


Record = tuple[int, bytes, bytes, list[tuple[str, bytes]]]


def _consume_all(cluster: KafkaCluster, topic: str, partitions: int, expected: int) -> list[Record]:
    consumer = Consumer({**cluster.client_conf(), "group.id": "sandbox-test", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[Record] = []
    for _ in range(600):
        if len(got) >= expected:
            break
        for msg in consumer.consume(1000, timeout=0.5):
            assert msg.error() is None, msg.error()
            got.append((msg.partition(), msg.key(), msg.value(), msg.headers()))
    consumer.close()
    return got


def _end_offsets(cluster: KafkaCluster, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({**cluster.client_conf(), "group.id": "sandbox-offsets"})
    ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    consumer.close()
    return ends


def test_ten_thousand_records_with_headers_round_trip(kafka_cluster: KafkaCluster, topic_factory: TopicFactory) -> None:
    """10k records with headers across 3 partitions are read back intact and in order per partition."""
    topic = topic_factory(kafka_cluster, partitions=3)
    sent = _produce(kafka_cluster, topic, 10_000, 3)
    got = _consume_all(kafka_cluster, topic, 3, len(sent))
    for p in range(3):
        want = [(k, v) for part, k, v in sent if part == p]
        have = [(k, v) for part, k, v, _ in got if part == p]
        assert have == want
    assert all(h and h[0][0] == "h" for *_, h in got)


def test_end_offsets_equal_records_produced(kafka_cluster: KafkaCluster, topic_factory: TopicFactory) -> None:
    """After producing, each partition's end offset equals the records sent to it."""
    topic = topic_factory(kafka_cluster, partitions=3)
    sent = _produce(kafka_cluster, topic, 10_000, 3)
    assert _end_offsets(kafka_cluster, topic, 3) == [sum(1 for s in sent if s[0] == p) for p in range(3)]


def test_data_survives_kill_and_restart(cluster_factory: ClusterFactory, topic_factory: TopicFactory) -> None:
    """A cluster killed with SIGKILL and started again still holds every acknowledged record."""
    cluster = cluster_factory()
    topic = topic_factory(cluster, partitions=2)
    sent = _produce(cluster, topic, 2_000, 2)
    cluster.kill()
    assert not cluster.alive()
    cluster.start()
    got = _consume_all(cluster, topic, 2, len(sent))
    assert sorted((p, k, v) for p, k, v, _ in got) == sorted(sent)


def test_scram_client_connects_over_tls(cluster_factory: ClusterFactory) -> None:
    """A SCRAM-SHA-512 client with the right password lists the auth cluster's brokers over TLS."""
    cluster = cluster_factory(auth=True)
    assert cluster.client_config()["security.protocol"] == "SASL_SSL"
    md = AdminClient(cluster.client_conf()).list_topics(timeout=20)
    assert list(md.brokers) == [1]


def test_wrong_password_is_refused(cluster_factory: ClusterFactory) -> None:
    """A SCRAM client with a wrong password gets an authentication error from the broker."""
    cluster = cluster_factory(auth=True)
    errors: list[KafkaError] = []
    # The refusal is expected: every librdkafka line at debug.
    conf = {
        **cluster.client_config(),
        "sasl.password": "wrong",
        "error_cb": errors.append,
        "logger": librdkafka_logger(quiet=True),
    }
    producer = Producer(conf)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not errors:
        producer.poll(0.5)
    assert [e.code() for e in errors][:1] == [KafkaError._AUTHENTICATION], errors
