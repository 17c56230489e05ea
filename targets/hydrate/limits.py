"""How large a payload an envelope may claim: what can be produced to the target, and what the window holds.

An envelope's ``size`` is a claim by whoever wrote the envelope topic. A claim is refused, before
any fetch and through ``on_error`` (kind ``too_large``), when the hydrated record could never be
produced or would not fit in the payload window:

* what can be produced to target topic ``t``: the producer's ``message.max.bytes`` (librdkafka
  refuses a larger record), and ``t``'s ``max.message.bytes`` when it could be read at start-up
  (the broker refuses a larger batch), less :data:`FRAMING` bytes of record-batch framing and the
  record's own key and headers. This is the default ``max_object_size``;
* ``target.hydrate.max_object_size`` (or ``s3.max_object_size``) when set;
* ``max_in_flight / copies``: the payload window reserves ``copies`` times a payload (see
  :mod:`targets.hydrate.window`), and no single envelope may hold more than the whole window.

Everything but :func:`read_topic_limits` is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from relay.logs import librdkafka_logger
from relay.settings import ClusterConfig

FRAMING: Final = 512
"""Bytes kept free for the record batch around a hydrated record (batch header, record header, varints)."""

LIBRDKAFKA_DEFAULT_MESSAGE_MAX: Final = 1_000_000
"""librdkafka's ``message.max.bytes`` when the producer's config does not set it."""

HEADER_OVERHEAD: Final = 10
"""Bytes a header costs beyond its name and value in a record (length varints), rounded up."""


@dataclass(frozen=True)
class Bound:
    """The largest size a claim may have, and a phrase saying where that limit comes from."""

    limit: int
    why: str


def record_overhead(key: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> int:
    """Bytes a record's key and headers add to its payload when produced."""
    size = len(key or b"")
    for name, value in headers:
        size += len(name.encode("utf-8")) + len(value or b"") + HEADER_OVERHEAD
    return size


class ClaimLimits:
    """The bounds on claimed sizes, per target topic. Thread-safe for readers; topic limits are replaced whole.

    ``max_object_size`` is the configured cap (None: only what can be produced), ``producer_max``
    the producer's ``message.max.bytes``, ``max_in_flight`` and ``copies`` those of the payload window.
    """

    def __init__(self, max_object_size: int | None, producer_max: int, max_in_flight: int, copies: int) -> None:
        self.max_object_size = max_object_size
        self.producer_max = producer_max
        self.window = Bound(
            max(1, max_in_flight) // copies,
            f"max_in_flight is {max_in_flight} bytes and the payload window counts a payload {copies} times",
        )
        self.topic_max: Mapping[str, int] = {}

    def set_topic_limits(self, limits: Mapping[str, int]) -> None:
        """The ``max.message.bytes`` of the target topics, as read from the target cluster."""
        self.topic_max = dict(limits)

    def produce_bound(self, topic: str) -> Bound:
        """The most a record of ``topic`` may weigh (key, headers and payload), framing deducted."""
        topic_max = self.topic_max.get(topic)
        if topic_max is not None and topic_max < self.producer_max:
            return Bound(topic_max - FRAMING, f"target topic {topic!r} has max.message.bytes={topic_max}")
        return Bound(self.producer_max - FRAMING, f"the producer's message.max.bytes is {self.producer_max}")

    def bounds(self, topic: str, overhead: int = 0) -> list[Bound]:
        """Every bound on a claim for a record of ``topic`` whose key and headers weigh ``overhead`` bytes."""
        produce = self.produce_bound(topic)
        why = f"{produce.why}, the record's key and headers included" if overhead else produce.why
        out = [Bound(max(0, produce.limit - overhead), why)]
        if self.max_object_size is not None:
            out.append(Bound(self.max_object_size, "target.hydrate.max_object_size"))
        out.append(self.window)
        return out

    def smallest(self, topic: str, overhead: int = 0) -> Bound:
        """The tightest bound on a claim for a record of ``topic`` (see :meth:`bounds`)."""
        return min(self.bounds(topic, overhead), key=lambda b: b.limit)

    def refusal(self, topic: str, size: int, overhead: int) -> Bound | None:
        """The bound a claim of ``size`` breaks for a record of ``topic``, or None if it breaks none."""
        bound = self.smallest(topic, overhead)
        return bound if size > bound.limit else None


def producer_message_max(cluster: ClusterConfig) -> int:
    """The producer's ``message.max.bytes``: as configured, else librdkafka's default."""
    raw = cluster.kafka.get("message.max.bytes")
    try:
        return int(str(raw)) if raw is not None else LIBRDKAFKA_DEFAULT_MESSAGE_MAX
    except ValueError:
        return LIBRDKAFKA_DEFAULT_MESSAGE_MAX


def read_topic_limits(
    cluster: ClusterConfig, topics: Sequence[str], timeout: float, conf: Mapping[str, Any] | None = None
) -> tuple[dict[str, int], dict[str, str]]:
    """``max.message.bytes`` of each of ``topics`` that could be read, and why each other one could not.

    One ``DescribeConfigs`` request per topic (needs the ``DescribeConfigs`` ACL on the topic). A
    topic that does not exist, or whose config is not readable, is left out and explained.
    """
    client: dict[str, Any] = {**cluster.client_config(), "logger": librdkafka_logger(), **(conf or {})}
    admin = AdminClient(client)
    resources = {topic: ConfigResource(ResourceType.TOPIC, topic) for topic in dict.fromkeys(topics)}
    found: dict[str, int] = {}
    failed: dict[str, str] = {}
    if not resources:
        return found, failed
    try:
        futures = admin.describe_configs(list(resources.values()), request_timeout=timeout)
    except KafkaException as exc:
        return found, {topic: exc.args[0].str() for topic in resources}
    for topic, resource in resources.items():
        try:
            entries = futures[resource].result(timeout=timeout)
        except KafkaException as exc:
            failed[topic] = exc.args[0].str()
            continue
        except Exception as exc:  # a timeout, or anything else the client reports: the limit is unknown
            failed[topic] = f"{type(exc).__name__}: {exc}"
            continue
        entry = entries.get("max.message.bytes")
        try:
            found[topic] = int(str(entry.value)) if entry is not None else -1
        except ValueError:
            found[topic] = -1
        if found[topic] <= 0:
            del found[topic]
            failed[topic] = "the broker did not report max.message.bytes"
    return found, failed
