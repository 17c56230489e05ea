"""The Kafka target's settings: the ``target`` section's cluster, batching, retries and transactions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from relay.errors import ConfigError
from relay.options import Section, read_backoff, read_cluster
from relay.settings import MIB, Backoff, ClusterConfig, is_topic_name
from targets.context import TargetContext
from targets.kafka.positions import default_topic
from targets.kafka.topicconfig import DEFAULT_INCLUDE, TopicConfigPolicy

_CONFIG_NAME = re.compile(r"[a-z][a-z0-9.]*[a-z0-9]")


@dataclass(frozen=True)
class BatchConfig:
    """When the target cuts a batch (one transaction): by records, by bytes, or after ``linger``.

    ``max_bytes`` defaults to 64 MiB, or to ``max_in_flight`` when that is smaller: records of
    several MiB need batches of many of them, or every transaction commits only a record or two
    (docs/performance.md has the figures).
    """

    max_records: int = 20_000
    max_bytes: int = 64 * MIB
    linger: float = 0.05


@dataclass(frozen=True)
class KafkaTargetConfig:
    """Validated ``target`` section of a Kafka-writing target (``kafka``, ``lfs``, ``hydrate``).

    ``transactional_id`` None means the relay's name. ``positions_topic`` is the compacted topic
    the relay keeps its resume positions in (see :mod:`targets.kafka.positions`; None means the
    relay's name + ``-positions``, see :meth:`positions_topic_for`);
    ``import_header_positions`` takes the ``kfr-pos`` headers of earlier releases once, for a
    source partition that has no entry there yet (see :mod:`targets.kafka.legacy`).
    ``replication_factor`` is that of the topics the relay creates (-1: the target cluster's
    default); ``topic_configs`` which configs they take from their source topics
    (:mod:`targets.kafka.topicconfig`). ``on_existing_data`` says what a source partition with no
    positions entry does when its target partition already holds records (:mod:`targets.kafka.existing`):
    ``fail`` stops the relay, ``append`` relays it from the source's beginning next to them.
    """

    cluster: ClusterConfig
    batch: BatchConfig = BatchConfig()
    retry: Backoff = Backoff(0.2, 10.0)
    transactional_id: str | None = None
    transaction_timeout: float = 60.0
    create_topics: bool = True
    positions_topic: str | None = None
    import_header_positions: bool = True
    replication_factor: int = -1
    topic_configs: TopicConfigPolicy = TopicConfigPolicy()
    on_existing_data: str = "fail"

    def positions_topic_for(self, name: str) -> str:
        """The positions topic of the relay called ``name``."""
        return self.positions_topic or default_topic(name)


def parse_kafka_target(sec: Section, context: TargetContext) -> KafkaTargetConfig:
    """The keys of ``target`` every Kafka-writing target reads. The caller finishes ``sec``."""
    d = KafkaTargetConfig
    batch_sec = sec.section("batch")
    batch = BatchConfig(
        max_records=batch_sec.integer("max_records", BatchConfig.max_records, minimum=1),
        max_bytes=batch_sec.size("max_bytes", min(BatchConfig.max_bytes, context.max_in_flight), positive=True),
        linger=batch_sec.duration("linger", BatchConfig.linger),
    )
    batch_sec.finish()
    retry_sec = sec.section("retry")
    retry = read_backoff(retry_sec.section("backoff"), d.retry)
    retry_sec.finish()
    if context.max_in_flight < batch.max_bytes:
        raise ConfigError(
            "max_in_flight", f"must be at least target.batch.max_bytes ({batch.max_bytes} bytes)", context.max_in_flight
        )
    positions_topic = sec.opt_topic("positions_topic")
    resolved = positions_topic or default_topic(context.name)
    if not is_topic_name(resolved):
        raise ConfigError(
            sec.key_path("positions_topic"),
            f"is not set and the default, the relay's name + '-positions' ({resolved!r}), is not a legal topic name",
        )
    if resolved in {t.source for t in context.topics} | {t.target for t in context.topics}:
        raise ConfigError(sec.key_path("positions_topic"), "must be a topic of its own, not a source or target topic")
    replication_factor = sec.integer("replication_factor", d.replication_factor, minimum=-1)
    if replication_factor == 0:
        where = sec.key_path("replication_factor")
        raise ConfigError(where, "must be -1 (the target cluster's default) or at least 1", 0)
    return KafkaTargetConfig(
        replication_factor=replication_factor,
        topic_configs=_topic_configs(sec.section("topic_configs")),
        positions_topic=positions_topic,
        import_header_positions=sec.flag("import_header_positions", d.import_header_positions),
        cluster=read_cluster(sec, "target"),
        batch=batch,
        retry=retry,
        transactional_id=sec.opt_text("transactional_id"),
        transaction_timeout=sec.duration("transaction_timeout", d.transaction_timeout, positive=True),
        create_topics=sec.flag("create_topics", d.create_topics),
        on_existing_data=sec.choice("on_existing_data", ("fail", "append"), d.on_existing_data),
    )


def _config_names(sec: Section, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    names = sec.strings(key, default)
    for i, name in enumerate(names):
        if not _CONFIG_NAME.fullmatch(name):
            raise ConfigError(f"{sec.key_path(key)}[{i}]", "is not a topic config name (like retention.ms)", name)
    return names


def _topic_configs(sec: Section) -> TopicConfigPolicy:
    policy = TopicConfigPolicy(
        include=_config_names(sec, "include", DEFAULT_INCLUDE),
        exclude=_config_names(sec, "exclude", ()),
        sync_interval=sec.duration("sync_interval", TopicConfigPolicy.sync_interval),
    )
    sec.finish()
    return policy
