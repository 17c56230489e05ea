"""The ``hydrate`` target's settings: ``target.hydrate`` and the Kafka target's keys beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from lfs import BucketPolicy
from lfs.s3 import S3Settings
from relay.errors import ConfigError
from relay.options import Section
from relay.settings import MIB
from targets.context import TargetContext, read_side_topic
from targets.kafka.settings import KafkaTargetConfig, parse_kafka_target
from targets.s3 import parse_allowed_buckets, parse_s3, refuse_writer_keys

OnError = Literal["fail", "dead-letter", "passthrough"]


@dataclass(frozen=True)
class HydrateConfig:
    """The validated ``target.hydrate`` section."""

    policy: BucketPolicy
    s3: S3Settings
    max_object_size: int | None = None
    """The configured cap on claims; None: what can be produced to the target (see :mod:`targets.hydrate.limits`)."""
    allow_unverified: bool = False
    fetch_concurrency: int = 4
    part_size: int = 8 * MIB
    on_error: OnError = "fail"
    dead_letter_topic: str | None = None


def parse_hydrate(sec: Section, context: TargetContext) -> HydrateConfig:
    """Validate ``target.hydrate``; raises one :class:`ConfigError` naming the key path.

    ``allowed_buckets`` (required, non-empty): bucket names, or ``{bucket, prefixes: [...]}`` to
    trust only keys under those prefixes. ``max_object_size`` (default ``s3.max_object_size``
    if set, else None: what can be produced to the target topic, see
    :mod:`targets.hydrate.limits`): the largest claimed size fetched. ``allow_unverified``
    (false): accept envelopes that give nothing to verify (checksum ``none`` and no ``sha256``,
    a legacy shape). ``fetch_concurrency`` (4): records fetched, and ranged GETs in flight, at once.
    ``part_size`` (8MiB): bytes per ranged GET. ``on_error`` (fail | dead-letter | passthrough)
    and ``dead_letter_topic`` (required with dead-letter). ``s3``: connection settings as in
    :func:`lfs.s3.parse_s3`; the writer-only keys (bucket, prefix, sse, kms_key_id, tags) are
    refused, since buckets come from envelopes and must be listed in ``allowed_buckets``.
    """
    d = HydrateConfig
    policy = parse_allowed_buckets(sec)
    s3_sec = sec.section("s3")
    refuse_writer_keys(s3_sec, "the hydrate target reads")
    s3_cap = s3_sec.raw("max_object_size", None) is not None
    s3 = parse_s3(s3_sec, require_bucket=False)
    max_object_size: int | None = s3.max_object_size if s3_cap else None
    if sec.raw("max_object_size", None) is not None:
        max_object_size = sec.size("max_object_size", positive=True)
    allow_unverified = sec.flag("allow_unverified", d.allow_unverified)
    fetch_concurrency = sec.integer("fetch_concurrency", d.fetch_concurrency, minimum=1)
    if fetch_concurrency > 256:
        raise ConfigError(sec.key_path("fetch_concurrency"), "must be at most 256", fetch_concurrency)
    part_size = sec.size("part_size", d.part_size, positive=True)
    if part_size < 64 * 1024:
        raise ConfigError(sec.key_path("part_size"), "must be at least 64KiB", sec.raw("part_size"))
    on_error = cast(OnError, sec.choice("on_error", ("fail", "dead-letter", "passthrough"), d.on_error))
    dlq = read_side_topic(sec, "dead_letter_topic", context)
    if on_error == "dead-letter" and dlq is None:
        raise ConfigError(sec.key_path("dead_letter_topic"), "is required with on_error: dead-letter")
    if on_error != "dead-letter" and dlq is not None:
        raise ConfigError(sec.key_path("dead_letter_topic"), "only applies with on_error: dead-letter", dlq)
    sec.finish()
    return HydrateConfig(
        policy=policy,
        s3=s3,
        max_object_size=max_object_size,
        allow_unverified=allow_unverified,
        fetch_concurrency=fetch_concurrency,
        part_size=part_size,
        on_error=on_error,
        dead_letter_topic=dlq,
    )


@dataclass(frozen=True)
class HydrateTargetConfig:
    """The whole ``target`` section of ``type: hydrate``: the Kafka target's keys and ``hydrate``."""

    kafka: KafkaTargetConfig
    hydrate: HydrateConfig


def parse(sec: Section, context: TargetContext) -> HydrateTargetConfig:
    """Validate ``target`` for ``type: hydrate``; ``target.hydrate`` (at least allowed_buckets) is required."""
    if not sec.has("hydrate"):
        raise ConfigError("target.hydrate", "is required when target.type is hydrate (at least allowed_buckets)")
    return HydrateTargetConfig(
        kafka=parse_kafka_target(sec, context), hydrate=parse_hydrate(sec.section("hydrate"), context)
    )
