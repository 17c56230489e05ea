"""Fixtures on the real sandbox: Kafka clusters, topics and S3, started by the test session itself.

A server that cannot start fails the test that needs it, with the server's log tail; nothing is
ever skipped for want of infrastructure.
"""

from __future__ import annotations

import fcntl
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import structlog
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_lfs_relay.sandbox import KafkaCluster, KafkaDistribution, kafka_distribution

pytest_plugins = ["tests.fixtures_s3"]

ClusterFactory = Callable[..., KafkaCluster]
TopicFactory = Callable[..., str]

# Held for the whole session once an integration test is collected (see below).
_MACHINE_LOCK: list[IO[str]] = []


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration sessions on one machine run one at a time.

    Each starts Kafka brokers and an S3 server, and relays with timeouts sized for one session:
    two sessions at once (two checkouts, two terminals) starve each other's brokers and fail on
    timeouts that say nothing about the code. The lock is taken before the first test, so the
    wait does not count against any test's timeout, and is let go when the process exits.
    """
    if _MACHINE_LOCK or config.option.collectonly:
        return
    if not any(item.get_closest_marker("integration") for item in items):
        return
    handle = (Path(tempfile.gettempdir()) / "kafka-lfs-relay-integration.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("waiting for another integration test session on this machine to finish", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    _MACHINE_LOCK.append(handle)


@pytest.fixture(scope="session")
def kafka_dist() -> KafkaDistribution:
    """The Kafka jars (resolved from Maven Central once, then cached)."""
    return kafka_distribution()


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Every test starts from structlog's defaults: one that configures logging (a level, a masker,
    a stream that pytest closes afterwards) must not decide what the tests after it see."""
    yield
    structlog.reset_defaults()


def _factory(root: Path, dist: KafkaDistribution) -> tuple[ClusterFactory, list[KafkaCluster]]:
    started: list[KafkaCluster] = []

    def make(name: str | None = None, auth: bool = False, acls: bool = False) -> KafkaCluster:
        name = name or f"k{len(started) + 1}"
        cluster = KafkaCluster.create(name, root / f"{name}-{uuid.uuid4().hex[:6]}", dist, auth=auth, acls=acls)
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
    admin = AdminClient(cluster.client_conf())
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
