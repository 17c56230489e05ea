"""What every built-in target is parsed and built with, besides its own section of the config."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from relay.errors import ConfigError
from relay.options import Section
from relay.settings import ClusterConfig, TopicConfig

SourceConfigs = Callable[[Sequence[str]], Mapping[str, Mapping[str, str]]]
"""Given source topic names, each one's configs (name -> effective value) on a source cluster.
Raises :class:`relay.target.TargetError` when they cannot be read."""

SourcePartitions = Callable[[Sequence[str]], Mapping[str, int]]
"""Given source topic names, each one's partition count on the active source cluster."""

SourceTopicIds = Callable[[Sequence[str]], tuple[str, Mapping[str, str]]]
"""Given source topic names, the active source cluster's name and each topic's Kafka topic id there."""


@dataclass(frozen=True)
class TargetContext:
    """The parts of the relay's configuration a built-in target needs to know.

    ``name`` is the relay's name (the default ``transactional.id`` and the key of its positions);
    ``group`` says whether partitions come and go (group mode), so each source partition needs a
    writer of its own to fence; ``max_in_flight`` is the relay's byte budget; ``source_configs``
    describes source topics' configs (the application reads them on a source cluster), for the
    target topics the Kafka target creates (None: they get the target's defaults);
    ``source_partitions`` counts the source topics' partitions: in group mode a target is handed
    a share of them, and a target topic it creates must still get as many as its source;
    ``source_topic_ids`` names each source topic's Kafka topic id on the active source (a topic
    deleted and created again gets a new one: its records are new data);
    ``messages`` builds every record as a :class:`~relay.message.Message` before it is produced
    (``fast_path: false``: what a plugin filter or a custom target costs, for comparison);
    ``provenance`` stamps each record with the id of the source cluster it was read from and drops
    records whose provenance names the target cluster (ids of ``sources`` and the target: their
    ``id``, or the cluster id Kafka reports).
    """

    name: str
    topics: tuple[TopicConfig, ...]
    max_in_flight: int
    group: bool = False
    source_configs: SourceConfigs | None = None
    source_partitions: SourcePartitions | None = None
    messages: bool = False
    source_topic_ids: SourceTopicIds | None = None
    provenance: bool = False
    sources: tuple[ClusterConfig, ...] = ()


def read_side_topic(sec: Section, key: str, context: TargetContext) -> str | None:
    """An optional topic of a target's own (a dead-letter topic): legal, and no source or target topic."""
    topic = sec.opt_topic(key)
    if topic is not None and topic in {t.target for t in context.topics} | {t.source for t in context.topics}:
        raise ConfigError(sec.key_path(key), "must be a topic of its own, not a source or target topic", topic)
    return topic
