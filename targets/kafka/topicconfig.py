"""The configs a target topic takes from its source topic, so that the mirror means what the source means.

When the relay creates a target topic it gives it the source topic's partition count and the
configs that define what the topic is to its consumers (:data:`DEFAULT_INCLUDE`, changed with
``target.topic_configs.include`` and ``exclude``); ``check`` reports where an existing target topic
differs on those keys, and ``target.topic_configs.sync_interval`` applies them periodically.

The rules, key by key (:func:`wanted`):

* ``cleanup.policy``, ``retention.ms``, ``retention.bytes``, ``min.compaction.lag.ms``,
  ``max.compaction.lag.ms``, ``delete.retention.ms``: the source's effective value (a compacted
  source must not become a deleting mirror; how long tombstones stay visible is part of a
  compacted topic's contract).
* ``max.message.bytes``: the largest of the source's value and the relay's own producer limit
  (``message.max.bytes`` of the target's client properties), set only where that is above the
  target broker's limit: the target must take every record the relay sends it, and a smaller
  source limit would only make the relay's larger batches fail.
* ``message.timestamp.type``: always ``CreateTime``. The relay copies every record's source
  timestamp; a ``LogAppendTime`` target would replace it with the time the relay wrote it (hours
  later after a catch-up), changing what time-based retention and ``offsetsForTimes`` see.
* ``message.timestamp.after.max.ms``: the source's (how far ahead of the broker's clock a record
  may be stamped; Kafka 4 lowered the default to an hour, so a source that accepts more would
  feed the mirror records it refuses), or the source's ``message.timestamp.difference.max.ms``
  where it has no such key (before Kafka 3.6), else the widest there is.
* ``message.timestamp.before.max.ms``: always the widest there is. A record reaches the target
  later than it reached the source, by as much as the relay lags (hours after an outage), so even
  the source's own limit would refuse a record the source took.
* Not copied by default: replication and durability (``min.insync.replicas``,
  ``unclean.leader.election.enable``: they depend on the target cluster's size) and storage
  tuning (``segment.*``, ``compression.type``, tiered storage).

For the ``lfs`` and ``hydrate`` targets the target's records are not the source's in size
(envelopes instead of payloads, or the reverse): the application leaves ``max.message.bytes`` and
``retention.bytes`` out of the source's configs, so the target's limits and the relay's own
producer limit (``lfs.threshold`` plus headroom, ``max_object_size``) are what count.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

DEFAULT_INCLUDE: Final = (
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "max.message.bytes",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
)
"""The configs copied by default: those that define what the topic is to its consumers."""

TIMESTAMP_LIMITS: Final = frozenset({"message.timestamp.before.max.ms", "message.timestamp.after.max.ms"})
"""How far behind and ahead of the broker's clock a record's timestamp may be: a target topic narrower
than its source refuses records the source took, and the relay stops on the first."""

WIDEST: Final = str(2**63 - 1)
"""Kafka's largest (and, for ``message.timestamp.before.max.ms``, default) limit: no limit."""

SIZE_KEYS: Final = frozenset({"max.message.bytes", "retention.bytes"})
"""Configs about record sizes: not copied where the target's records differ in size from the source's."""

KAFKA_MESSAGE_MAX: Final = 1_048_588
"""Kafka's default ``message.max.bytes``, assumed when the target broker's cannot be read."""


@dataclass(frozen=True)
class TopicConfigPolicy:
    """``target.topic_configs``: which configs a created target topic takes from its source, and a periodic sync."""

    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    sync_interval: float = 0.0
    """Seconds between syncs of existing target topics' configs; 0 is off (the default)."""

    @property
    def keys(self) -> tuple[str, ...]:
        """The configs copied: ``include`` without ``exclude``."""
        return tuple(k for k in self.include if k not in self.exclude)


def wanted(source: Mapping[str, str], keys: Collection[str], broker_max: int, producer_max: int) -> dict[str, str]:
    """The configs a target topic should have, from its source topic's ``source`` (see the module docstring).

    ``broker_max`` is the target broker's ``message.max.bytes``, ``producer_max`` the relay's own
    producer limit (0 when not set).
    """
    out: dict[str, str] = {}
    for key in keys:
        if key == "message.timestamp.type":
            out[key] = "CreateTime"
        elif key == "max.message.bytes":
            need = max(_int(source.get(key)), producer_max)
            if need > broker_max:
                out[key] = str(need)
        elif key == "message.timestamp.before.max.ms":
            out[key] = WIDEST
        elif key == "message.timestamp.after.max.ms":
            out[key] = source.get(key) or source.get("message.timestamp.difference.max.ms") or WIDEST
        elif source.get(key) is not None:
            out[key] = source[key]
    return out


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _same(key: str, want: str, have: str | None) -> bool:
    if have is None:
        return False
    if key == "max.message.bytes" or key in TIMESTAMP_LIMITS:
        return _int(have) >= _int(want)  # a larger limit on the target takes every record too
    if key == "cleanup.policy":
        return sorted(want.replace(" ", "").split(",")) == sorted(have.replace(" ", "").split(","))
    return want == have


def differences(want: Mapping[str, str], have: Mapping[str, str]) -> list[tuple[str, str, str | None]]:
    """(key, wanted value, actual value) for every key where the target topic's configs ``have`` differ."""
    return [(key, value, have.get(key)) for key, value in sorted(want.items()) if not _same(key, value, have.get(key))]
