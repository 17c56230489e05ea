"""Target topic configs like their source's: what the Kafka target creates topics with, ``check``, and the sync.

The source's configs are read on the source clusters of the config (the first that answers: the
sources hold the same topics); the rules for which keys and values a target topic takes are
:mod:`targets.kafka.topicconfig`. Where the target's records are not the source's in size (``lfs``,
``hydrate``) the size configs are left out here, once, for creation, ``check`` and the sync alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from kafka_lfs_relay.admin import Admins, error_text, selected_routes
from kafka_lfs_relay.config import RelayConfig
from kafka_lfs_relay.registry import TARGETS
from relay.settings import ClusterConfig
from relay.target import TargetError
from targets.kafka import KafkaTargetConfig, topicconfig
from targets.kafka.topics import broker_message_max

log = structlog.get_logger("kafka_lfs_relay.topic_configs")


class SourceTopicConfigs:
    """Reads source topics' configs on the first source that answers (a :data:`targets.context.SourceConfigs`)."""

    def __init__(self, sources: Sequence[ClusterConfig], timeout: float, same_records: bool) -> None:
        self.sources = list(sources)
        self.timeout = timeout
        self.same_records = same_records
        self.admins = Admins()

    def __call__(self, topics: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each of ``topics``' configs (name -> value); raises :class:`TargetError` if no source gives them."""
        reasons = []
        for cluster in self.sources:
            try:
                return self._read(cluster, topics)
            except Exception as exc:  # the next source may answer; every reason is reported if none does
                reasons.append(f"{cluster.name}: {error_text(exc)}")
        raise TargetError(
            f"cannot read the configs of source topic(s) {', '.join(topics)} to create their target topics like them "
            f"({'; '.join(reasons)}); allow DescribeConfigs on them, or set target.topic_configs.include: [] to "
            "create target topics with the target cluster's defaults"
        )

    def _read(self, cluster: ClusterConfig, topics: Sequence[str]) -> dict[str, dict[str, str]]:
        admin = self.admins(cluster)
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
        out: dict[str, dict[str, str]] = {}
        for resource, fut in admin.describe_configs(resources, request_timeout=self.timeout).items():
            try:
                entries = fut.result(timeout=self.timeout + 5)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # a source topic that does not exist has no target topic to create or compare
                raise
            out[resource.name] = {
                key: str(entry.value)
                for key, entry in entries.items()
                if entry.value is not None and (self.same_records or key not in topicconfig.SIZE_KEYS)
            }
        return out


def source_configs_for(config: RelayConfig) -> SourceTopicConfigs | None:
    """The source-config reader for ``config``'s target, or None when nothing is copied (custom target, empty list)."""
    kafka = config.target.kafka
    if kafka is None or not kafka.topic_configs.keys:
        return None
    same_records = TARGETS[config.target.type].same_records
    return SourceTopicConfigs(config.sources, max(5.0, 5 * config.source_pool.request_timeout), same_records)


@dataclass(frozen=True)
class TopicDifference:
    """One config where an existing target topic differs from what its source topic says it should be."""

    target_topic: str
    source_topic: str
    key: str
    wanted: str
    actual: str | None


class TopicConfigComparer:
    """Compares (and, for the sync, aligns) existing target topics with their source topics."""

    def __init__(self, config: RelayConfig, kafka: KafkaTargetConfig, source: SourceTopicConfigs) -> None:
        self.config = config
        self.kafka = kafka
        self.source = source
        self.admins = Admins()
        self.timeout = source.timeout

    def differences(self) -> tuple[list[TopicDifference], dict[str, dict[str, str]]]:
        """Differences of every existing target topic, and the configs each absent one would be created with."""
        admin = self.admins(self.kafka.cluster)
        md = admin.list_topics(timeout=self.timeout)
        keys = self.kafka.topic_configs.keys
        selected = selected_routes(self.config, self.admins, self.timeout)
        described = self.source([r.source for r in selected])
        broker_max = broker_message_max(admin, md) if "max.message.bytes" in keys else 0
        producer_max = int(self.kafka.cluster.kafka.get("message.max.bytes", "0") or 0)
        planned = {
            r.target: topicconfig.wanted(described.get(r.source, {}), keys, broker_max, producer_max)
            for r in selected
            if r.target not in md.topics and r.source in described
        }
        routes = [r for r in selected if r.target in md.topics and r.source in described]
        if not routes:
            return [], planned
        resources = {r.target: ConfigResource(ResourceType.TOPIC, r.target) for r in routes}
        futures = admin.describe_configs(list(resources.values()), request_timeout=self.timeout)
        found: list[TopicDifference] = []
        for route in routes:
            entries = futures[resources[route.target]].result(timeout=self.timeout + 5)
            have = {k: str(e.value) for k, e in entries.items() if e.value is not None}
            want = topicconfig.wanted(described.get(route.source, {}), keys, broker_max, producer_max)
            found += [
                TopicDifference(route.target, route.source, key, wanted, actual)
                for key, wanted, actual in topicconfig.differences(want, have)
            ]
        return found, planned

    def sync(self) -> None:
        """Set every differing config on the target topics (``target.topic_configs.sync_interval``)."""
        found, _ = self.differences()
        by_topic: dict[str, list[TopicDifference]] = {}
        for diff in found:
            by_topic.setdefault(diff.target_topic, []).append(diff)
        admin = self.admins(self.kafka.cluster)
        for topic, diffs in by_topic.items():
            resource = ConfigResource(
                ResourceType.TOPIC,
                topic,
                incremental_configs=[
                    ConfigEntry(d.key, d.wanted, incremental_operation=AlterConfigOpType.SET) for d in diffs
                ],
            )
            try:
                admin.incremental_alter_configs([resource])[resource].result(timeout=self.timeout + 5)
            except Exception as exc:  # reported; the next pass tries again
                log.warning("could not set target topic configs", topic=topic, error=error_text(exc))
                continue
            for d in diffs:
                log.info(
                    "target topic config set like its source",
                    topic=topic,
                    config=d.key,
                    value=d.wanted,
                    was=d.actual,
                    source_topic=d.source_topic,
                )
