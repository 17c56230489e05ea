"""The settings the relay core is built with: small frozen objects, no YAML.

The application layer (``kafka_lfs_relay.config``) reads the config file into these; the core
only ever receives them. Each default is written once, here: parsers read it from the class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from relay.errors import REDACTED, is_secret_path
from relay.oauth import OAuthSettings

MIB: Final = 1024 * 1024

TOPIC_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""A legal Kafka topic name (``.`` and ``..`` excepted, see :func:`is_topic_name`)."""


def is_topic_name(name: str) -> bool:
    """Whether ``name`` is a legal Kafka topic name."""
    return TOPIC_NAME.fullmatch(name) is not None and name not in (".", "..")


PartitionMode = Literal["preserve", "key"] | int
"""How a target partition is chosen: the source's, by key like the Java client, or a fixed one."""

GapPolicy = Literal["fail", "skip"]
"""What a resume position below the source log's start (records deleted before they were relayed) does:
stop the relay, or go on from the log start and count what was lost."""

GAP_POLICIES: Final = ("fail", "skip")

SOURCE_MANAGED_PROPERTIES: Final[Mapping[str, str]] = {
    "auto.offset.reset": (
        "the relay never jumps to another offset on its own; a position outside the log is a gap, "
        "handled by on_gap (topics[].on_gap or the top-level on_gap)"
    ),
    "enable.auto.commit": "the relay resumes from what the target committed, never from consumer offsets",
    "enable.auto.offset.store": "the relay resumes from what the target committed, never from consumer offsets",
    "isolation.level": "the relay reads read_committed so that records of aborted transactions are never relayed",
    "enable.partition.eof": "the relay needs end-of-partition events to know where each partition is",
    "group.id": "set group.id under group: for group mode; otherwise the relay uses a random one, never committed",
    "partition.assignment.strategy": "group mode uses cooperative-sticky, which the relay's rebalance handling needs",
    "session.timeout.ms": "set group.session_timeout instead",
    "heartbeat.interval.ms": "the relay derives it from group.session_timeout",
}
"""librdkafka consumer properties the relay sets on its source consumers itself, and why a source's
``kafka:`` map may not set them."""


def _masked(props: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret_path(k) else v) for k, v in props.items()}


@dataclass(frozen=True)
class ClusterConfig:
    """A Kafka cluster: its name in logs and metrics, where it is, and extra librdkafka properties."""

    name: str
    bootstrap_servers: str
    kafka: Mapping[str, str] = field(default_factory=dict)
    oauth: OAuthSettings | None = None
    id: str | None = None
    """A stable id for provenance headers (None: the cluster id Kafka reports)."""

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties for a client of this cluster (with its ``oauth_cb``, if it has one)."""
        props: dict[str, Any] = {**self.kafka, "bootstrap.servers": self.bootstrap_servers}
        if self.oauth is not None:
            props["oauth_cb"] = self.oauth.callback()
        return props

    def __repr__(self) -> str:
        return (
            f"ClusterConfig(name={self.name!r}, bootstrap_servers={self.bootstrap_servers!r}, "
            f"kafka={_masked(self.kafka)!r}, id={self.id!r})"
        )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between ``min`` and ``max`` seconds (see :mod:`relay.backoff`)."""

    min: float
    max: float


@dataclass(frozen=True)
class SourcePoolConfig:
    """Health checking and failover between source clusters."""

    healthcheck_interval: float = 2.0
    request_timeout: float = 1.0
    lag_threshold: int = 10_000
    unhealthy_after: int = 2
    lag_checks: int = 2
    min_dwell: float = 30.0
    random_initial: bool = False
    verify_on_switch: bool = True
    backoff: Backoff = Backoff(0.5, 30.0)


@dataclass(frozen=True)
class TopicConfig:
    """One source topic, the target topic it goes to, how target partitions are chosen, and what a gap does."""

    source: str
    target: str
    partition: PartitionMode = "preserve"
    on_gap: GapPolicy = "fail"


@dataclass(frozen=True)
class GroupConfig:
    """Scale-out: instances with the same ``id`` share the source partitions as one consumer group."""

    id: str
    session_timeout: float = 10.0


@dataclass(frozen=True)
class RelaySettings:
    """How the relay's loop runs: which topics go where, its byte budget, when it stops, group mode."""

    topics: tuple[TopicConfig, ...]
    max_in_flight: int = 256 * MIB
    stop_at_end: bool = False
    group: GroupConfig | None = None

    @property
    def queue_bytes(self) -> int:
        """How much the source consumer may prefetch: a quarter of ``max_in_flight``, at least 1 MiB."""
        return max(1 << 20, self.max_in_flight // 4)
