"""Fixtures on the real sandbox: Kafka clusters, topics and S3, started by the test session itself.

A server that cannot start fails the test that needs it, with the server's log tail; nothing is
ever skipped for want of infrastructure.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_lfs_relay.sandbox import KafkaCluster, KafkaDistribution, kafka_distribution

pytest_plugins = ["tests.fixtures_s3"]

ClusterFactory = Callable[..., KafkaCluster]
TopicFactory = Callable[..., str]


@pytest.fixture(scope="session")
def kafka_dist() -> KafkaDistribution:
    """The Kafka jars (resolved from Maven Central once, then cached)."""
    return kafka_distribution()


def _factory(root: Path, dist: KafkaDistribution) -> tuple[ClusterFactory, list[KafkaCluster]]:
    started: list[KafkaCluster] = []

    def make(name: str | None = None, auth: bool = False) -> KafkaCluster:
        name = name or f"k{len(started) + 1}"
        cluster = KafkaCluster.create(name, root / f"{name}-{uuid.uuid4().hex[:6]}", dist, auth=auth)
        started.append(cluster)
        cluster.start()
        return cluster

    return make, started


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory, kafka_dist: KafkaDistribution) -> Iterator[KafkaCluster]:
    """One plain cluster shared by the whole session; tests isolate themselves by topic name."""
    make, started = _factory(tmp_path_factory.mktemp("shared-kafka"), kafka_dist)
    yield make("shared")
    for cluster in started:
        cluster.stop()


@pytest.fixture
def cluster_factory(tmp_path: Path, kafka_dist: KafkaDistribution) -> Iterator[ClusterFactory]:
    """Fresh clusters a test may kill, pause or restart; all are stopped when the test ends."""
    make, started = _factory(tmp_path, kafka_dist)
    yield make
    for cluster in started:
        cluster.resume()
        cluster.stop(grace=10)


def create_topic(cluster: KafkaCluster, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
    """Create ``name`` on ``cluster`` and wait until the creation is acknowledged."""
    admin = AdminClient(cluster.client_config())
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)
    futures[name].result(timeout=60)
    return name


@pytest.fixture
def topic_factory() -> TopicFactory:
    """Makes uniquely named topics: ``topic_factory(cluster, partitions=3, config={...})``."""

    def make(cluster: KafkaCluster, partitions: int = 1, config: dict[str, str] | None = None,
             name: str | None = None) -> str:  # fmt: skip
        return create_topic(cluster, name or f"t-{uuid.uuid4().hex[:10]}", partitions, config)

    return make
