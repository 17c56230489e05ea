"""The validated, immutable configuration: one frozen dataclass per section.

``parse_config`` turns a loaded YAML tree into a :class:`RelayConfig` or raises one
:class:`~relay.errors.ConfigError` that names the key path and the bad value. Nothing here
touches the network or the file system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from relay.config.reader import Section
from relay.errors import REDACTED, ConfigError, is_secret_path

MIB = 1024 * 1024
BUILTIN_TARGETS = ("kafka", "lfs", "hydrate")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

PartitionMode = Literal["preserve", "key"] | int


def _masked(props: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret_path(k) else v) for k, v in props.items()}


@dataclass(frozen=True)
class ClusterConfig:
    """A Kafka cluster: its name in logs and metrics, where it is, and extra librdkafka properties."""

    name: str
    bootstrap_servers: str
    kafka: Mapping[str, str] = field(default_factory=dict)

    def client_config(self) -> dict[str, str]:
        """librdkafka properties for a client of this cluster."""
        return {**self.kafka, "bootstrap.servers": self.bootstrap_servers}

    def __repr__(self) -> str:
        return (
            f"ClusterConfig(name={self.name!r}, bootstrap_servers={self.bootstrap_servers!r}, "
            f"kafka={_masked(self.kafka)!r})"
        )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between ``min`` and ``max`` seconds."""

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
    """One source topic, the target topic it goes to, and how target partitions are chosen."""

    source: str
    target: str
    partition: PartitionMode = "preserve"


@dataclass(frozen=True)
class BatchConfig:
    """When the target cuts a batch (one transaction): by records, by bytes, or after ``linger``.

    ``max_bytes`` defaults to 64 MiB, or to ``max_in_flight`` when that is smaller: with records
    of several MiB, 16 MiB batches committed a transaction every two records and the Kafka
    target wrote 8 MiB records at 111 MB/s against 171 MB/s with 64 MiB batches.
    """

    max_records: int = 20_000
    max_bytes: int = 64 * MIB
    linger: float = 0.05


@dataclass(frozen=True)
class TargetConfig:
    """Where records go. ``type`` is ``kafka`` or a dotted path ``package.module:Class``."""

    type: str
    cluster: ClusterConfig
    batch: BatchConfig = BatchConfig()
    retry: Backoff = Backoff(0.2, 10.0)
    transactional_id: str | None = None
    transaction_timeout: float = 60.0
    create_topics: bool = True
    options: Mapping[str, object] = field(default_factory=dict)


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
class GroupConfig:
    """Scale-out: instances with the same ``id`` share the source partitions as one consumer group."""

    id: str
    session_timeout: float = 10.0


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
    stop_at_end: bool = False
    max_in_flight: int = 256 * MIB
    metrics_listen: tuple[str, int] | None = None
    log: LogConfig = LogConfig()
    group: GroupConfig | None = None


def _cluster(sec: Section, default_name: str) -> ClusterConfig:
    cluster = ClusterConfig(
        name=sec.text("name", default_name),
        bootstrap_servers=sec.text("bootstrap_servers"),
        kafka=sec.string_map("kafka"),
    )
    if "bootstrap.servers" in cluster.kafka:
        raise ConfigError(sec.key_path("kafka.bootstrap.servers"), "set bootstrap_servers instead")
    return cluster


def _source(sec: Section, index: int) -> ClusterConfig:
    cluster = _cluster(sec, f"source-{index + 1}")
    sec.finish()
    return cluster


def _backoff(sec: Section, default: Backoff) -> Backoff:
    low = sec.duration("min", default.min, positive=True)
    high = sec.duration("max", default.max, positive=True)
    if high < low:
        raise ConfigError(sec.key_path("max"), f"must not be less than {sec.key_path('min')}", sec.raw("max"))
    sec.finish()
    return Backoff(low, high)


def _source_pool(sec: Section) -> SourcePoolConfig:
    d = SourcePoolConfig()
    interval = sec.duration("healthcheck_interval", d.healthcheck_interval, positive=True)
    pool = SourcePoolConfig(
        healthcheck_interval=interval,
        request_timeout=sec.duration("request_timeout", d.request_timeout, positive=True),
        lag_threshold=sec.integer("lag_threshold", d.lag_threshold, minimum=1),
        unhealthy_after=sec.integer("unhealthy_after", d.unhealthy_after, minimum=1),
        lag_checks=sec.integer("lag_checks", d.lag_checks, minimum=1),
        min_dwell=sec.duration("min_dwell", d.min_dwell),
        random_initial=sec.flag("random_initial", d.random_initial),
        verify_on_switch=sec.flag("verify_on_switch", d.verify_on_switch),
        backoff=_backoff(sec.section("backoff"), d.backoff),
    )
    sec.finish()
    return pool


def _topic_name(sec: Section, key: str, default: object = None) -> str:
    name = sec.text(key) if default is None else sec.text(key, default)
    if not _TOPIC_RE.match(name) or name in (".", ".."):
        raise ConfigError(sec.key_path(key), "is not a legal Kafka topic name", name)
    return name


def _topic(sec: Section) -> TopicConfig:
    source = _topic_name(sec, "source")
    target = _topic_name(sec, "target", source)
    raw = sec.raw("partition", "preserve")
    partition: PartitionMode
    if raw in ("preserve", "key"):
        partition = "preserve" if raw == "preserve" else "key"
    elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        partition = raw
    else:
        raise ConfigError(sec.key_path("partition"), "expected preserve, key or a partition number >= 0", raw)
    sec.finish()
    return TopicConfig(source, target, partition)


def _target(sec: Section, options_keys: tuple[str, ...], max_in_flight: int) -> TargetConfig:
    d_batch = BatchConfig()
    batch_sec = sec.section("batch")
    batch = BatchConfig(
        max_records=batch_sec.integer("max_records", d_batch.max_records, minimum=1),
        max_bytes=batch_sec.size("max_bytes", min(d_batch.max_bytes, max_in_flight), positive=True),
        linger=batch_sec.duration("linger", d_batch.linger),
    )
    batch_sec.finish()
    retry_sec = sec.section("retry")
    retry = _backoff(retry_sec.section("backoff"), TargetConfig.retry)
    retry_sec.finish()
    kind = sec.text("type", "kafka")
    if kind not in BUILTIN_TARGETS and ":" not in kind:
        raise ConfigError(
            sec.key_path("type"), f"expected one of {', '.join(BUILTIN_TARGETS)} or package.module:Class", kind
        )
    for key in options_keys:
        # A section another type reads would be silently ignored: an lfs section under type kafka
        # means the operator believes records are offloaded while they are not.
        if not sec.has(key) or key == kind:
            continue
        if key in BUILTIN_TARGETS:
            raise ConfigError(sec.key_path(key), f"does not apply to target.type {kind} (only to type {key})")
        if kind in BUILTIN_TARGETS:
            raise ConfigError(
                sec.key_path(key), f"does not apply to target.type {kind} (only to a custom package.module:Class)"
            )
    if kind in BUILTIN_TARGETS or sec.has("bootstrap_servers"):
        cluster = _cluster(sec, "target")
    else:
        # A custom target need not write to Kafka; it gets the whole section through ``options``.
        cluster = ClusterConfig(sec.text("name", "target"), "", sec.string_map("kafka"))
    target = TargetConfig(
        type=kind,
        cluster=cluster,
        batch=batch,
        retry=retry,
        transactional_id=sec.opt_text("transactional_id"),
        transaction_timeout=sec.duration("transaction_timeout", TargetConfig.transaction_timeout, positive=True),
        create_topics=sec.flag("create_topics", TargetConfig.create_topics),
        options={k: sec.mapping(k) for k in options_keys if sec.has(k)},
    )
    sec.finish()
    return target


def _filter(sec: Section, index: int) -> FilterConfig:
    flt = FilterConfig(
        name=sec.text("name", f"filter-{index}"),
        type=sec.text("type"),
        config=sec.mapping("config"),
        on_error="drop" if sec.choice("on_error", ("fail", "drop"), "fail") == "drop" else "fail",
    )
    sec.finish()
    return flt


def _listen(sec: Section) -> tuple[str, int] | None:
    value = sec.opt_text("listen")
    sec.finish()
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) <= 65535:
        raise ConfigError(sec.key_path("listen"), "expected host:port, e.g. 127.0.0.1:9464", value)
    return (host.strip("[]") or "0.0.0.0", int(port))


def parse_config(tree: object, target_option_keys: tuple[str, ...] = (), asked: set[str] | None = None) -> RelayConfig:
    """Validate a loaded YAML tree (after ``${VAR}`` substitution) into a :class:`RelayConfig`.

    ``target_option_keys`` names the extra sections under ``target`` that the chosen target
    type validates itself (for example ``lfs``); any other unknown key is an error. ``asked``, if
    given, collects every key path the parser looked for.
    """
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
    topics = tuple(_topic(s) for s in top.sections("topics", required=True))
    seen: dict[str, str] = {}
    for i, t in enumerate(topics):
        if t.source in seen:
            raise ConfigError(f"topics[{i}].source", "is listed twice", t.source)
        if t.target in seen.values():
            raise ConfigError(
                f"topics[{i}].target",
                "already receives another source topic; each target topic takes exactly one source topic",
                t.target,
            )
        seen[t.source] = t.target
    log_sec = top.section("log")
    log = LogConfig(
        level=log_sec.choice("level", ("debug", "info", "warning", "error"), "info"),
        format="json" if log_sec.choice("format", ("console", "json"), "console") == "json" else "console",
    )
    log_sec.finish()
    max_in_flight = top.size("max_in_flight", 256 * MIB, positive=True)
    config = RelayConfig(
        name=top.text("name", "kafka-lfs-relay"),
        mode=mode,
        sources=sources,
        topics=topics,
        target=_target(top.section("target"), target_option_keys, max_in_flight),
        source_pool=_source_pool(top.section("source_pool")),
        filters=tuple(_filter(s, i) for i, s in enumerate(top.sections("filters"))),
        stop_at_end=top.flag("stop_at_end", False),
        max_in_flight=max_in_flight,
        metrics_listen=_listen(top.section("metrics")),
        log=log,
        group=_group(top.section("group")) if top.has("group") else None,
    )
    top.finish()
    validate(config)
    return config


def _group(sec: Section) -> GroupConfig:
    group = GroupConfig(
        id=sec.text("id"),
        session_timeout=sec.duration("session_timeout", GroupConfig.session_timeout, positive=True),
    )
    sec.finish()
    return group


def validate(config: RelayConfig) -> None:
    """Rules across sections, checked again after command-line overrides."""
    if config.max_in_flight < config.target.batch.max_bytes:
        raise ConfigError(
            "max_in_flight",
            f"must be at least target.batch.max_bytes ({config.target.batch.max_bytes} bytes)",
            config.max_in_flight,
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
    for i, topic in enumerate(config.topics):
        if topic.partition != "preserve":
            raise ConfigError(
                f"topics[{i}].partition",
                "group mode needs partition: preserve, so each source partition has one writer to fence",
                topic.partition,
            )
