"""The validated, immutable configuration: one frozen object per section.

``parse_config`` turns a loaded YAML tree into a :class:`RelayConfig` or raises one
:class:`~relay.errors.ConfigError` that names the key path and the bad value. Nothing here
touches the network or the file system. The relay core's own settings (clusters, the source
pool, topics, group mode) are :mod:`relay.settings`; each target type reads its part of
``target`` itself, through the registry (:mod:`kafka_lfs_relay.registry`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from kafka_lfs_relay.registry import CUSTOM_SECTION, SECTIONS, TARGETS
from relay.errors import ConfigError
from relay.health import STALL_TIMEOUT
from relay.options import Section, env_integer, read_backoff, read_cluster
from relay.plugins import is_dotted_path
from relay.selection import TOPIC_REFRESH, TopicRule, TopicSelection, collisions, template_problem
from relay.settings import (
    GAP_POLICIES,
    SOURCE_MANAGED_PROPERTIES,
    ClusterConfig,
    GapPolicy,
    GroupConfig,
    RelaySettings,
    SourcePoolConfig,
    TopicConfig,
)
from targets.context import TargetContext
from targets.kafka import KafkaTargetConfig

DEFAULT_NAME = "kafka-lfs-relay"
"""A relay's name when the config gives none: its transactional.id and the key of its positions."""

Workers = int | Literal["auto"]
"""How many relay processes ``run`` starts: a number, or ``auto`` (one per core it may use)."""


@dataclass(frozen=True)
class TargetConfig:
    """Where records go: a built-in ``type`` of the registry with what its parser returned, or a
    custom ``package.module:Class`` with its ``options`` mapping as ``settings``."""

    type: str
    settings: Any

    @property
    def builtin(self) -> bool:
        """Whether ``type`` is a built-in target of the registry."""
        return self.type in TARGETS

    @property
    def kafka(self) -> KafkaTargetConfig | None:
        """The Kafka target's settings of a built-in type (every one writes through it), else None."""
        entry = TARGETS.get(self.type)
        return entry.kafka_of(self.settings) if entry is not None else None


@dataclass(frozen=True)
class FilterConfig:
    """One filter: a name for metrics and logs, a type, its own config, and what an exception means."""

    name: str
    type: str
    config: Mapping[str, object]
    on_error: Literal["fail", "drop"] = "fail"


@dataclass(frozen=True)
class LogConfig:
    """Log level and format."""

    level: str = "info"
    format: Literal["console", "json"] = "console"


@dataclass(frozen=True)
class GroupOffsetsConfig:
    """Background sync of consumer-group offsets to the target: groups matching ``groups`` (regular
    expressions, whole name), every ``interval``."""

    groups: tuple[str, ...]
    interval: float = 30.0


@dataclass(frozen=True)
class RelayConfig:
    """The whole configuration of one relay process."""

    name: str
    mode: Literal["single", "failover"]
    sources: tuple[ClusterConfig, ...]
    topics: tuple[TopicConfig, ...]
    target: TargetConfig
    source_pool: SourcePoolConfig = SourcePoolConfig()
    filters: tuple[FilterConfig, ...] = ()
    stop_at_end: bool = RelaySettings.stop_at_end
    max_in_flight: int = RelaySettings.max_in_flight
    metrics_listen: tuple[str, int] | None = None
    stall_timeout: float = STALL_TIMEOUT
    log: LogConfig = LogConfig()
    group: GroupConfig | None = None
    fast_path: bool = True
    workers: Workers | None = None
    group_offsets: GroupOffsetsConfig | None = None
    selection: TopicSelection | None = None
    """Every ``topics`` entry, patterns included (``topics`` holds the explicit entries' routes alone)."""
    provenance: bool = False

    @property
    def rules(self) -> TopicSelection:
        """The topic selection: the configured one, or the explicit ``topics`` as rules."""
        if self.selection is not None:
            return self.selection
        rules = tuple(TopicRule(t.source, None, (), t.target, t.partition, t.on_gap) for t in self.topics)
        return TopicSelection(rules, self.sources[0].name)

    def target_context(self) -> TargetContext:
        """What a built-in target is parsed and built with."""
        group = self.group is not None
        return TargetContext(
            self.name,
            self.topics,
            self.max_in_flight,
            group,
            messages=not self.fast_path,
            provenance=self.provenance,
            sources=self.sources,
        )


def _source(sec: Section, index: int) -> ClusterConfig:
    cluster = read_cluster(sec, f"source-{index + 1}")
    for key in cluster.kafka:
        why = SOURCE_MANAGED_PROPERTIES.get(key)
        if why is not None:
            raise ConfigError(sec.key_path(f"kafka.{key}"), f"is set by the relay and cannot be overridden: {why}")
    sec.finish()
    return cluster


def _gap_policy(sec: Section, default: GapPolicy) -> GapPolicy:
    return "skip" if sec.choice("on_gap", GAP_POLICIES, default) == "skip" else "fail"


def _source_pool(sec: Section) -> SourcePoolConfig:
    d = SourcePoolConfig
    pool = SourcePoolConfig(
        healthcheck_interval=sec.duration("healthcheck_interval", d.healthcheck_interval, positive=True),
        request_timeout=sec.duration("request_timeout", d.request_timeout, positive=True),
        lag_threshold=sec.integer("lag_threshold", d.lag_threshold, minimum=1),
        unhealthy_after=sec.integer("unhealthy_after", d.unhealthy_after, minimum=1),
        lag_checks=sec.integer("lag_checks", d.lag_checks, minimum=1),
        min_dwell=sec.duration("min_dwell", d.min_dwell),
        random_initial=sec.flag("random_initial", d.random_initial),
        verify_on_switch=sec.flag("verify_on_switch", d.verify_on_switch),
        backoff=read_backoff(sec.section("backoff"), d.backoff),
    )
    sec.finish()
    return pool


def _topic(sec: Section, on_gap: GapPolicy) -> TopicRule:
    if sec.has("source") == sec.has("source_pattern"):
        raise ConfigError(sec.key_path("source"), "give either source (a topic name) or source_pattern (a regex)")
    source = sec.topic("source") if sec.has("source") else None
    pattern = _regex(sec, "source_pattern") if source is None else None
    exclude = tuple(_regex(sec, "exclude", i) for i in range(len(sec.strings("exclude"))))
    if exclude and pattern is None:
        raise ConfigError(sec.key_path("exclude"), "applies to source_pattern only")
    target = sec.text("target", "{topic}")
    problem = template_problem(target)
    if problem is not None:
        raise ConfigError(sec.key_path("target"), problem, target)
    raw = env_integer(sec.raw("partition", TopicConfig.partition))
    partition: Any
    if raw in ("preserve", "key") or (isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0):
        partition = raw
    else:
        raise ConfigError(sec.key_path("partition"), "expected preserve, key or a partition number >= 0", raw)
    policy = _gap_policy(sec, on_gap)
    sec.finish()
    return TopicRule(source, pattern, exclude, target, partition, policy)


def _regex(sec: Section, key: str, index: int | None = None) -> str:
    """A regular expression (matched against whole topic names) at ``key`` (item ``index`` of a list)."""
    if index is None:
        value, path = sec.text(key), sec.key_path(key)
    else:
        value, path = sec.strings(key)[index], f"{sec.key_path(key)}[{index}]"
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(path, f"is not a regular expression ({exc})", value) from None
    return value


def _selection(top: Section, mode: str, sources: tuple[ClusterConfig, ...]) -> TopicSelection:
    on_gap = _gap_policy(top, TopicConfig.on_gap)
    rules = tuple(_topic(s, on_gap) for s in top.sections("topics", required=True))
    for i, rule in enumerate(rules):
        if rule.source is not None and rule.source in [r.source for r in rules[:i]]:
            raise ConfigError(f"topics[{i}].source", "is listed twice", rule.source)
        if "{source}" in rule.target and mode == "failover" and len(sources) > 1:
            raise ConfigError(
                f"topics[{i}].target",
                "cannot name {source} in mode failover: the sources are copies of one cluster, and a target topic "
                "named after the active one would change at every switch; write the name instead",
                rule.target,
            )
    found = collisions(rules, sources[0].name)
    if found is not None:
        raise ConfigError(f"topics[{found[0]}].target", found[1], rules[found[0]].target)
    refresh = top.duration("topic_refresh", TOPIC_REFRESH, positive=True)
    return TopicSelection(rules, sources[0].name, refresh)


def _target(sec: Section, context: TargetContext) -> TargetConfig:
    kind = sec.text("type", "kafka")
    entry = TARGETS.get(kind)
    if entry is None and not is_dotted_path(kind):
        raise ConfigError(sec.key_path("type"), f"expected one of {', '.join(TARGETS)} or package.module:Class", kind)
    own = entry.section if entry is not None else CUSTOM_SECTION
    for key in SECTIONS:
        # A section another type reads would be silently ignored: an lfs section under type kafka
        # means the operator believes records are offloaded while they are not.
        if key == own or not sec.has(key):
            continue
        if key == CUSTOM_SECTION:
            raise ConfigError(
                sec.key_path(key), f"does not apply to target.type {kind} (only to a custom package.module:Class)"
            )
        raise ConfigError(sec.key_path(key), f"does not apply to target.type {kind} (only to type {key})")
    settings = entry.parse(sec, context) if entry is not None else sec.mapping(CUSTOM_SECTION)
    sec.finish()
    return TargetConfig(kind, settings)


def _filter(sec: Section, index: int) -> FilterConfig:
    flt = FilterConfig(
        name=sec.text("name", f"filter-{index}"),
        type=sec.text("type"),
        config=sec.mapping("config"),
        on_error="drop" if sec.choice("on_error", ("fail", "drop"), FilterConfig.on_error) == "drop" else "fail",
    )
    sec.finish()
    return flt


def _metrics(sec: Section) -> tuple[tuple[str, int] | None, float]:
    """``metrics.listen`` (host, port) or None, and ``metrics.stall_timeout`` (liveness, ``/healthz``)."""
    stall = sec.duration("stall_timeout", STALL_TIMEOUT, positive=True)
    return _listen(sec), stall


def _listen(sec: Section) -> tuple[str, int] | None:
    value = sec.opt_text("listen")
    sec.finish()
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) <= 65535:
        raise ConfigError(sec.key_path("listen"), "expected host:port, e.g. 127.0.0.1:9464", value)
    return (host.strip("[]") or "0.0.0.0", int(port))


def _log(sec: Section) -> LogConfig:
    d = LogConfig
    log = LogConfig(
        level=sec.choice("level", ("debug", "info", "warning", "error"), d.level),
        format="json" if sec.choice("format", ("console", "json"), d.format) == "json" else "console",
    )
    sec.finish()
    return log


def _group(sec: Section) -> GroupConfig:
    group = GroupConfig(
        id=sec.text("id"),
        session_timeout=sec.duration("session_timeout", GroupConfig.session_timeout, positive=True),
    )
    sec.finish()
    return group


def _provenance(sec: Section) -> bool:
    enabled = sec.flag("enabled", RelayConfig.provenance)
    sec.finish()
    return enabled


def parse_workers(value: object, path: str = "workers") -> Workers:
    """``workers``: a number >= 1 or ``auto``."""
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(path, "expected a number of processes >= 1, or auto (one per core)", value)


def with_workers(config: RelayConfig, workers: Workers) -> RelayConfig:
    """``config`` run as ``workers`` processes: in group mode, whose id defaults to the relay's name."""
    return replace(config, workers=workers, group=config.group or GroupConfig(id=config.name))


def _group_offsets(sec: Section) -> GroupOffsetsConfig | None:
    groups = sec.strings("groups")
    for i, pattern in enumerate(groups):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{sec.key_path('groups')}[{i}]", f"is not a regular expression ({exc})", pattern
            ) from None
    interval = sec.duration("interval", GroupOffsetsConfig.interval, positive=True)
    sec.finish()
    return GroupOffsetsConfig(groups, interval) if groups else None


def parse_config(tree: object, asked: set[str] | None = None) -> RelayConfig:
    """Validate a loaded YAML tree (after ``${VAR}`` substitution) into a :class:`RelayConfig`.

    ``asked``, if given, collects every key path the parser looked for.
    """
    d = RelayConfig
    top = Section(tree, "", asked)
    mode: Literal["single", "failover"] = (
        "failover" if top.choice("mode", ("single", "failover"), "single") == "failover" else "single"
    )
    sources = tuple(_source(s, i) for i, s in enumerate(top.sections("sources", required=True)))
    names = [s.name for s in sources]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"sources[{i}].name", "is used by another source", name)
    if mode == "single" and len(sources) != 1:
        raise ConfigError("sources", f"mode single takes exactly one source, got {len(sources)}; use mode: failover")
    selection = _selection(top, mode, sources)
    topics = selection.explicit
    log = _log(top.section("log"))
    name = top.text("name", DEFAULT_NAME)
    max_in_flight = top.size("max_in_flight", d.max_in_flight, positive=True)
    group = _group(top.section("group")) if top.has("group") else None
    raw_workers = top.raw("workers", None)
    workers = parse_workers(raw_workers) if raw_workers is not None else None
    if workers is not None and group is None:
        # Workers share the partitions as a group; its id is the relay's name unless group.id says otherwise.
        group = GroupConfig(id=name)
    provenance = _provenance(top.section("provenance"))
    context = TargetContext(name, topics, max_in_flight, group is not None, provenance=provenance, sources=sources)
    metrics_listen, stall_timeout = _metrics(top.section("metrics"))
    target = _target(top.section("target"), context)
    if target.kafka is not None:
        selection = replace(selection, target=target.kafka.cluster.name)
    config = RelayConfig(
        name=name,
        mode=mode,
        sources=sources,
        topics=topics,
        target=target,
        source_pool=_source_pool(top.section("source_pool")),
        filters=tuple(_filter(s, i) for i, s in enumerate(top.sections("filters"))),
        stop_at_end=top.flag("stop_at_end", d.stop_at_end),
        max_in_flight=max_in_flight,
        metrics_listen=metrics_listen,
        stall_timeout=stall_timeout,
        log=log,
        group=group,
        fast_path=top.flag("fast_path", d.fast_path),
        workers=workers,
        group_offsets=_group_offsets(top.section("group_offsets")),
        selection=selection,
        provenance=provenance,
    )
    top.finish()
    validate(config)
    return config


def validate(config: RelayConfig) -> None:
    """Rules across sections, checked again after command-line overrides."""
    if config.provenance:
        if config.target.kafka is None:
            raise ConfigError("provenance", "needs a built-in target type: a custom target writes no headers")
        for i, flt in enumerate(config.filters):
            if flt.name == "provenance":
                raise ConfigError(
                    f"filters[{i}].name", "is the name records dropped by provenance are counted under", flt.name
                )
    if config.workers is not None:
        if config.mode == "failover":
            raise ConfigError(
                "workers",
                "workers share the partitions in group mode, which cannot be combined with mode: failover (the "
                "group lives on one source cluster); run one set of workers per source cluster instead",
            )
        if config.stop_at_end:
            raise ConfigError(
                "workers", "workers cannot be combined with stop_at_end: partitions move between the workers"
            )
    if config.group_offsets is not None:
        if config.target.kafka is None:
            raise ConfigError("group_offsets", "needs a built-in target type: a custom target keeps no offset map")
        if not any(t.partition == "preserve" for t in config.rules.rules):
            raise ConfigError(
                "group_offsets",
                "needs a topic with partition: preserve: only a mirrored partition has an offset map to translate with",
            )
    if config.group is None:
        return
    if config.mode == "failover":
        raise ConfigError(
            "group",
            "group mode cannot be combined with mode: failover: the group lives on one source cluster, and two "
            "groups on two clusters could both own a partition; run one group per source cluster instead",
        )
    if config.stop_at_end:
        raise ConfigError("group", "group mode cannot be combined with stop_at_end: partitions move between instances")
    for i, topic in enumerate(config.rules.rules):
        if topic.partition != "preserve":
            raise ConfigError(
                f"topics[{i}].partition",
                "group mode needs partition: preserve, so each source partition has one writer to fence",
                topic.partition,
            )
