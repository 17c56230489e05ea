"""Wiring: the one place where a validated config becomes a running relay (target, filters, pool, metrics)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import structlog

from filters import ChainLink, FilterChain, build_filters
from kafka_lfs_relay.background import Periodic, Task
from kafka_lfs_relay.config import RelayConfig
from kafka_lfs_relay.registry import TARGETS
from kafka_lfs_relay.topicconfigs import TopicConfigComparer, source_configs_for
from relay.adapter import MessageTarget
from relay.discovery import TopicWatch
from relay.errors import ConfigError
from relay.metrics import RelayMetrics
from relay.plugins import PluginLoadError, load_dotted
from relay.relay import Progress, Relay, RunFilter
from relay.run import Run
from relay.settings import RelaySettings
from relay.sourcepool import SourcePool
from relay.target import PartitionOwner, RunTarget, Target
from targets.context import SourcePartitions, SourceTopicIds
from targets.kafka import KafkaTarget

PROVENANCE_FILTER = "provenance"
"""The filter name records dropped by the provenance loop guard are counted under."""

log = structlog.get_logger("kafka_lfs_relay.relay")


def build_target(
    config: RelayConfig,
    metrics: RelayMetrics,
    source_partitions: SourcePartitions | None = None,
    source_topic_ids: SourceTopicIds | None = None,
) -> RunTarget:
    """The configured target: a built-in type of the registry, or a class loaded by dotted path (driven
    through :class:`relay.adapter.MessageTarget`, one ``Message`` at a time).

    ``source_partitions`` counts the source topics' partitions (the source pool's), for the target
    topics a built-in target creates in group mode; ``source_topic_ids`` names their topic ids on the
    active source, so that a built-in target tells a recreated source topic from the one it relayed.
    """
    tc = config.target
    entry = TARGETS.get(tc.type)
    if entry is not None:
        # The source's topic configs and partition counts, for the target topics the Kafka target creates.
        context = dataclasses.replace(
            config.target_context(),
            source_configs=source_configs_for(config),
            source_partitions=source_partitions,
            source_topic_ids=source_topic_ids,
        )
        return entry.build(tc.settings, context, metrics)
    try:
        cls = load_dotted(tc.type)
    except PluginLoadError as exc:
        raise ConfigError("target.type", str(exc), tc.type) from None
    options = tc.settings
    if not callable(cls):
        raise ConfigError("target.type", "is not a class", tc.type)
    target = cls(dict(options) if isinstance(options, Mapping) else {})
    if not isinstance(target, Target):
        raise ConfigError("target.type", "does not implement the Target protocol (relay.target.Target)", tc.type)
    if config.group is not None and not isinstance(target, PartitionOwner):
        raise ConfigError("group", f"target type {tc.type!r} cannot take part in group mode")
    return MessageTarget(target)


def _selector(
    config: RelayConfig, metrics: RelayMetrics, filters: FilterChain | None, target: RunTarget
) -> RunFilter | None:
    """What runs go through before the target: the provenance loop guard first (if on), then the filters."""
    guard = target.loop_guard if isinstance(target, KafkaTarget) else None
    if guard is None:
        if not filters:
            return None
        metrics.watch_filters(filters.stats)
        return filters.select
    guarded = FilterChain([ChainLink(PROVENANCE_FILTER, guard)])
    if not filters:
        metrics.watch_filters(guarded.stats)
        return guarded.select
    metrics.watch_filters(lambda: {**guarded.stats(), **filters.stats()})

    def select(run: Run) -> Run:
        return filters.select(guarded.select(run))

    return select


def build_relay(
    config: RelayConfig,
    metrics: RelayMetrics,
    on_progress: Callable[[Progress], None] | None = None,
) -> Relay:
    """A relay for ``config``; nothing is connected until :meth:`Relay.run`."""
    filters = build_filters(config.filters) if config.filters else None
    sources = config.sources if config.mode == "failover" else config.sources[:1]
    pool = SourcePool(sources, [t.source for t in config.topics], config.source_pool, metrics)
    target = build_target(config, metrics, pool.partitions, pool.topic_ids)
    settings = RelaySettings(config.topics, config.max_in_flight, config.stop_at_end, config.group)
    _log_path(config, filters)
    select = _selector(config, metrics, filters, target)
    watch = None
    if config.rules.dynamic:
        clusters = {s.name: s for s in sources}
        watch = TopicWatch(config.rules, clusters, lambda: pool.active, config.source_pool.request_timeout)
    return Relay(pool, target, settings, metrics, filters=select, on_progress=on_progress, watch=watch)


def _log_path(config: RelayConfig, filters: FilterChain | None) -> None:
    """Say at start-up whether records go to the target as consumed, and if not, what builds a Message per record."""
    why = []
    if not config.fast_path:
        why.append("fast_path: false")
    if filters is not None and filters.message_filters:
        why.append(f"filters without keep_consumed: {', '.join(filters.message_filters)}")
    if config.target.type in ("lfs", "hydrate"):
        why.append(f"target type {config.target.type} makes its records from Messages")
    elif config.target.type not in TARGETS:
        why.append("a custom target takes Messages")
    if why:
        log.info("relay path: a Message per record", reasons=why)
    else:
        log.info("relay path: records as consumed (no Message per record)")


def build_background(config: RelayConfig, metrics: RelayMetrics, leads: Callable[[], bool] = lambda: True) -> Periodic:
    """The periodic work beside the relay: the group offset sync (``group_offsets``) and the topic config
    sync (``target.topic_configs.sync_interval``), each if configured."""
    tasks: list[Task] = []
    kafka = config.target.kafka
    source = source_configs_for(config)
    if kafka is not None and source is not None and kafka.topic_configs.sync_interval > 0:
        comparer = TopicConfigComparer(config, kafka, source)
        tasks.append(Task("topic config sync", kafka.topic_configs.sync_interval, comparer.sync))
    if config.group_offsets is not None:
        from kafka_lfs_relay.offsets import GroupOffsetSync

        sync = GroupOffsetSync(config, metrics, config.group_offsets.groups)
        tasks.append(Task("group offset sync", config.group_offsets.interval, sync.run_once, sync.close))
    return Periodic(tasks, leads)
