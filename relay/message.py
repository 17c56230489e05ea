"""What flows through the relay: one source record, and the coordinates the relay resumes from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Headers = tuple[tuple[str, bytes | None], ...]


class SourcePartition(NamedTuple):
    """A partition of a source topic; source clusters in one pool share these coordinates."""

    topic: str
    partition: int


# Next source offset to read, per source partition. The relay resumes from these.
Offsets = Mapping[SourcePartition, int]


@dataclass(frozen=True, slots=True, init=False)
class Message:
    """One source record on its way to a target.

    ``topic`` says where the record goes (the target chooses the partition, see
    ``topics[].partition``). The ``source_*`` fields say exactly where it came from and are what
    resumption is built on: a target must never change them.
    """

    key: bytes | None
    value: bytes | None
    headers: Headers
    topic: str
    source_cluster: str
    source_topic: str
    source_partition: int
    source_offset: int
    timestamp_ms: int
    size: int = field(default=0)

    def __init__(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        topic: str,
        source_cluster: str,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        timestamp_ms: int,
        size: int = 0,
    ) -> None:
        # The generated frozen __init__ sets each field through object.__setattr__, a generic
        # lookup by name; setting the slots through their own descriptors is a third cheaper, and
        # a Message is built per record wherever one is needed.
        _SET_KEY(self, key)
        _SET_VALUE(self, value)
        _SET_HEADERS(self, headers)
        _SET_TOPIC(self, topic)
        _SET_SOURCE_CLUSTER(self, source_cluster)
        _SET_SOURCE_TOPIC(self, source_topic)
        _SET_SOURCE_PARTITION(self, source_partition)
        _SET_SOURCE_OFFSET(self, source_offset)
        _SET_TIMESTAMP_MS(self, timestamp_ms)
        _SET_SIZE(self, size)

    @property
    def source(self) -> SourcePartition:
        """The source partition this record was read from."""
        return SourcePartition(self.source_topic, self.source_partition)

    def header(self, name: str) -> bytes | None:
        """The value of the last header called ``name``, or None if there is none."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None

    def coordinates_key(self) -> tuple[str, int, int]:
        """(source topic, partition, offset): the record's identity, as a cheap dictionary key."""
        return (self.source_topic, self.source_partition, self.source_offset)

    def coordinates(self) -> str:
        """``cluster/topic/partition@offset``: how logs and errors name a record (never by payload)."""
        return f"{self.source_cluster}/{self.source_topic}/{self.source_partition}@{self.source_offset}"


_SLOTS: Mapping[str, Any] = vars(Message)
_SET_KEY = _SLOTS["key"].__set__
_SET_VALUE = _SLOTS["value"].__set__
_SET_HEADERS = _SLOTS["headers"].__set__
_SET_TOPIC = _SLOTS["topic"].__set__
_SET_SOURCE_CLUSTER = _SLOTS["source_cluster"].__set__
_SET_SOURCE_TOPIC = _SLOTS["source_topic"].__set__
_SET_SOURCE_PARTITION = _SLOTS["source_partition"].__set__
_SET_SOURCE_OFFSET = _SLOTS["source_offset"].__set__
_SET_TIMESTAMP_MS = _SLOTS["timestamp_ms"].__set__
_SET_SIZE = _SLOTS["size"].__set__
del _SLOTS


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes a record holds in memory, as counted against the relay's in-flight budget."""
    size = 64 + (len(key) if key else 0) + (len(value) if value else 0)
    for name, hv in headers:
        size += len(name) + (len(hv) if hv else 0)
    return size
