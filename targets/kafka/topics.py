"""Preparing target topics: check that they exist (or create them like their source), wait for leaders."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from relay.errors import passing
from relay.kafkautil import retriable
from relay.logs import librdkafka_logger
from relay.settings import ClusterConfig, TopicConfig
from relay.target import TargetError
from targets.context import SourceConfigs
from targets.kafka import positions, topicconfig
from targets.kafka.topicconfig import TopicConfigPolicy

log = structlog.get_logger("kafka_lfs_relay.target")

_TOPIC_READY_TIMEOUT = 30.0


class TopicPreparer:
    """Knows the target topics: their partition counts, once :meth:`prepare` has checked them.

    ``on_client_error`` is called with librdkafka's error events (authentication failures reach
    the client only that way); ``raise_if_fatal`` then turns a permanent one into a clear error.
    A target topic it creates gets its source topic's partition count and, when ``source_configs``
    is given, the configs ``policy`` copies (:mod:`targets.kafka.topicconfig`); every topic it
    creates gets ``replication_factor`` (-1: the cluster's default).
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        create: bool,
        positions_topic: str,
        on_client_error: Callable[[KafkaError], None],
        raise_if_fatal: Callable[[str], None],
        source_configs: SourceConfigs | None = None,
        policy: TopicConfigPolicy = TopicConfigPolicy(),
        replication_factor: int = -1,
    ) -> None:
        self._cluster = cluster
        self._create = create
        self._source_configs = source_configs
        self._policy = policy
        self._replication_factor = replication_factor
        self._on_client_error = on_client_error
        self._raise_if_fatal = raise_if_fatal
        self._positions_topic = positions_topic
        self._positions_checked = False
        self.partitions: dict[str, int] = {}
        """Partition count of every prepared topic."""
        self.grown: set[str] = set()
        """Target topics :meth:`grow` added partitions to (their writers' metadata must be refreshed)."""

    def _admin(self) -> AdminClient:
        conf: dict[str, Any] = {
            **self._cluster.client_config(),
            "error_cb": self._on_client_error,
            "logger": librdkafka_logger(),
        }
        return AdminClient(conf)

    def prepare(
        self, routes: Sequence[TopicConfig], extra_topics: Sequence[str], source_partitions: Mapping[str, int]
    ) -> None:
        """Check (and if allowed, create) the target topic of each route and each extra topic.

        ``source_partitions`` is each source topic's partition count. Under ``preserve`` a
        target topic with fewer partitions than its source is grown (:meth:`grow`).
        The positions topic is created if missing, whatever ``create_topics`` says: it is the
        relay's own.
        """
        name = self._cluster.name
        admin = self._admin()
        try:
            md = admin.list_topics(timeout=15)
        except KafkaException as exc:
            admin.poll(0.5)  # authentication failures reach error_cb only when polled
            self._raise_if_fatal("reading metadata")
            raise passing(TargetError(f"target {name} is unreachable: {exc.args[0].str()}")) from None
        routes = [r for r in routes if r.source in source_partitions]
        wanted = {r.target: source_partitions[r.source] for r in routes}
        # Side topics (e.g. a dead-letter topic) get as many partitions as the widest source topic,
        # so a record keeps its source partition number there too.
        wanted.update({t: max(source_partitions.values(), default=1) for t in extra_topics})
        missing = [t for t in wanted if t not in md.topics]
        if missing and not self._create:
            raise TargetError(f"target topic {missing[0]!r} does not exist on {name} and target.create_topics is false")
        if self._positions_topic not in md.topics:
            missing.append(self._positions_topic)
        if missing:
            self._create_topics(admin, md, [r for r in routes if r.target in missing], missing, wanted)
            md = admin.list_topics(timeout=15)
        md = self._await_leaders(admin, md, [*wanted, self._positions_topic])
        for topic in wanted:
            self.partitions[topic] = len(md.topics[topic].partitions)
        if not self._positions_checked:
            self._check_positions_topic(admin, len(md.topics[self._positions_topic].partitions))
        self._check_partitions(admin, routes, source_partitions)

    def _create_topics(
        self,
        admin: AdminClient,
        md: Any,
        routes: Sequence[TopicConfig],
        missing: Sequence[str],
        wanted: Mapping[str, int],
    ) -> None:
        """Create the ``missing`` topics: ``wanted`` partitions and their source's settings, or the
        positions topic's own; a topic someone else created meanwhile is fine."""
        name = self._cluster.name
        configs = self._configs_like_source(admin, md, routes)
        rf = self._replication_factor
        new = [
            NewTopic(t, 1, rf, config=dict(positions.TOPIC_CONFIG))
            if t == self._positions_topic
            else NewTopic(t, wanted[t], rf, config=configs.get(t, {}))
            for t in missing
        ]
        for topic, fut in admin.create_topics(new, operation_timeout=30).items():
            try:
                fut.result(timeout=60)
                log.info(
                    "target topic created",
                    topic=topic,
                    cluster=name,
                    partitions=1 if topic == self._positions_topic else wanted[topic],
                    configs=configs.get(topic, {}),
                )
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    error = TargetError(f"creating target topic {topic!r} on {name}: {err.str()}")
                    raise (passing(error) if retriable(err) else error) from None

    def _await_leaders(self, admin: AdminClient, md: Any, topics: Sequence[str]) -> Any:
        """Metadata in which every partition of ``topics`` has a leader; a retriable error after
        ``_TOPIC_READY_TIMEOUT``.

        A topic just created (by us or by whoever set it up a moment ago) is listed without
        leaders for a short while; writing then fails, so wait for leaders before giving up.
        """
        deadline = time.monotonic() + _TOPIC_READY_TIMEOUT
        while True:
            unready = [t for t in topics if not _has_leaders(md.topics.get(t))]
            if not unready or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
            md = admin.list_topics(timeout=15)
        if unready:
            raise passing(
                TargetError(
                    f"target topic {unready[0]!r} is not available on {self._cluster.name}: "
                    f"no leader for all its partitions after {_TOPIC_READY_TIMEOUT:.0f} s"
                )
            )
        return md

    def _check_partitions(
        self, admin: AdminClient, routes: Sequence[TopicConfig], source_partitions: Mapping[str, int]
    ) -> None:
        """Grow a ``preserve`` route's target topic to its source's width; refuse a fixed partition it lacks."""
        for route in routes:
            count = self.partitions[route.target]
            have = source_partitions.get(route.source, 0)
            if route.partition == "preserve" and count < have:
                count = self.partitions[route.target] = self.grow(admin, route, count, have)
            if isinstance(route.partition, int) and not isinstance(route.partition, bool) and route.partition >= count:
                raise TargetError(
                    f"topics: partition {route.partition} does not exist in target topic "
                    f"{route.target!r} ({count} partitions)"
                )

    def grow(self, admin: AdminClient, route: TopicConfig, count: int, wanted: int) -> int:
        """Add partitions to ``route``'s target topic (``count`` now) until it has ``wanted``, as its source has.

        Under ``partition: preserve`` a source partition's records go to the target partition of the
        same number, so a source topic that grew must grow its target first. Only a relay that may
        create target topics (``create_topics``) adds partitions; another relay (or a worker) that
        grew it first is fine. Returns the count now; raises :class:`TargetError` naming the topic
        and both counts when the relay may not, or the cluster refuses.
        """
        name, topic = self._cluster.name, route.target
        need = (
            f"partition: preserve needs target topic {topic!r} to have at least {wanted} partitions like source "
            f"topic {route.source!r}, but it has {count}"
        )
        if not self._create:
            raise TargetError(
                f"{need}, and target.create_topics is false, so the relay does not add partitions on {name} "
                f"(add them to {topic!r}, or allow create_topics)"
            )
        try:
            admin.create_partitions([NewPartitions(topic, wanted)], operation_timeout=30)[topic].result(timeout=60)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.INVALID_PARTITIONS:  # another worker grew it first: looked at below
                raise TargetError(f"{need}; adding partitions on {name} failed: {err.str()}") from None
        deadline = time.monotonic() + _TOPIC_READY_TIMEOUT
        while True:
            tmd = admin.list_topics(topic, timeout=15).topics.get(topic)
            now = len(tmd.partitions) if tmd is not None and tmd.error is None else 0
            if now >= wanted and _has_leaders(tmd):
                break
            if time.monotonic() >= deadline:
                raise TargetError(f"{need}; partitions were added on {name}, but have no leader after "
                                  f"{_TOPIC_READY_TIMEOUT:.0f} s")  # fmt: skip
            time.sleep(0.25)
        if count < wanted <= now:
            log.warning("target topic grown like its source", topic=topic, cluster=name, partitions_before=count,
                        partitions=now, source_topic=route.source)  # fmt: skip
        self.grown.add(topic)
        return now

    def topic_ids(self, topics: Sequence[str]) -> dict[str, str]:
        """The Kafka topic id of each of ``topics`` that exists (a topic deleted and created again has a new one)."""
        if not topics:
            return {}
        admin = self._admin()
        try:
            futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=30)
            return {topic: str(fut.result(timeout=60).topic_id) for topic, fut in futures.items()}
        except KafkaException as exc:
            raise TargetError(
                f"target {self._cluster.name}: describing topics {', '.join(topics)}: {exc.args[0].str()}"
            ) from None

    def _configs_like_source(
        self, admin: AdminClient, md: Any, routes: Sequence[TopicConfig]
    ) -> dict[str, dict[str, str]]:
        """The configs each route's target topic is created with, from its source topic (target topic -> configs)."""
        keys = self._policy.keys
        if not routes or self._source_configs is None or not keys:
            return {}
        described = self._source_configs([r.source for r in routes])
        producer_max = _int(self._cluster.kafka.get("message.max.bytes"))
        broker_max = broker_message_max(admin, md) if "max.message.bytes" in keys else 0
        return {
            r.target: topicconfig.wanted(described.get(r.source, {}), keys, broker_max, producer_max) for r in routes
        }

    def _check_positions_topic(self, admin: AdminClient, partitions: int) -> None:
        """Refuse a positions topic that is not exactly what the relay needs (see :func:`positions_topic_problem`)."""
        resource = ConfigResource(ResourceType.TOPIC, self._positions_topic)
        try:
            configs = admin.describe_configs([resource])[resource].result(timeout=30)
        except KafkaException as exc:
            error = TargetError(
                f"target {self._cluster.name}: reading the config of positions topic {self._positions_topic!r}: "
                f"{exc.args[0].str()}"
            )
            raise (passing(error) if retriable(exc.args[0]) else error) from None
        policy = configs.get("cleanup.policy")
        problem = positions_topic_problem(None if policy is None else str(policy.value), partitions)
        if problem is not None:
            raise TargetError(f"target {self._cluster.name}: positions topic {self._positions_topic!r} {problem}")
        self._positions_checked = True


def positions_topic_problem(cleanup_policy: str | None, partitions: int) -> str | None:
    """What is wrong with a positions topic of ``cleanup_policy`` and ``partitions`` (None: nothing).

    As Kafka Connect refuses such an offsets topic: with ``delete`` in its policy, the entries of
    partitions that stay idle longer than ``retention.ms`` expire and the relay copies them again
    from the beginning; with more than one partition, the relay writes partition 0 but an entry or
    tombstone written to another would be read in no defined order against it.
    """
    policies = sorted({p.strip() for p in (cleanup_policy or "").split(",") if p.strip()})
    if policies != ["compact"]:
        return (
            f"has cleanup.policy={cleanup_policy or '?'}; it must be exactly compact: with delete its entries "
            "expire and the relay would copy their partitions again from the beginning "
            "(set cleanup.policy=compact on it)"
        )
    if partitions != 1:
        return (
            f"has {partitions} partitions; it must have exactly 1: the relay writes its entries to partition 0, "
            "and an entry or tombstone in another partition is read in no defined order against them "
            "(create a compacted topic with one partition, copy partition 0 into it and name it in "
            "target.positions_topic)"
        )
    return None


def _has_leaders(tmd: Any) -> bool:
    """Whether topic metadata ``tmd`` is error-free and every partition has a leader."""
    if tmd is None or tmd.error is not None or not tmd.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in tmd.partitions.values())


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def broker_message_max(admin: AdminClient, md: Any) -> int:
    """The target broker's ``message.max.bytes`` (Kafka's default if it cannot be read: no DescribeConfigs)."""
    brokers = sorted(md.brokers) if md.brokers else []
    if not brokers:
        return topicconfig.KAFKA_MESSAGE_MAX
    resource = ConfigResource(ResourceType.BROKER, str(brokers[0]))
    try:
        entry = admin.describe_configs([resource])[resource].result(timeout=30).get("message.max.bytes")
    except KafkaException:
        return topicconfig.KAFKA_MESSAGE_MAX
    return _int(entry.value if entry is not None else None) or topicconfig.KAFKA_MESSAGE_MAX
