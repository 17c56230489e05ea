"""What flows through the relay: one source record, and the coordinates the relay resumes from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

Headers = tuple[tuple[str, bytes | None], ...]


class SourcePartition(NamedTuple):
    """A partition of a source topic; source clusters in one pool share these coordinates."""

    topic: str
    partition: int


# Next source offset to read, per source partition. The relay resumes from these.
Offsets = Mapping[SourcePartition, int]

AUTO_PARTITION = -1


@dataclass(frozen=True, slots=True)
class Message:
    """One source record on its way to a target.

    ``topic`` and ``partition`` say where the record goes; ``AUTO_PARTITION`` (-1) lets the
    target's partitioner choose by key. The ``source_*`` fields say exactly where it came from
    and are what resumption is built on: a target must never change them.
    """

    key: bytes | None
    value: bytes | None
    headers: Headers
    topic: str
    partition: int
    source_cluster: str
    source_topic: str
    source_partition: int
    source_offset: int
    timestamp_ms: int
    size: int = field(default=0)

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

    def coordinates(self) -> str:
        """``cluster/topic/partition@offset``: how logs and errors name a record (never by payload)."""
        return f"{self.source_cluster}/{self.source_topic}/{self.source_partition}@{self.source_offset}"


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes a record holds in memory, as counted against the relay's in-flight budget."""
    size = 64 + (len(key) if key else 0) + (len(value) if value else 0)
    for name, hv in headers:
        size += len(name) + (len(hv) if hv else 0)
    return size
