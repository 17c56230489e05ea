"""Which of a relay's objects may go: every object under its keys, classified. The decision itself is pure.

The rules, in the order they are applied (the first that holds decides; see :func:`classify`):

1. ``foreign``: the key is not one this relay's ``key_template`` renders: never touched.
2. ``live``: an envelope still in the log of a target topic names it (read with ``read_committed``
   up to the end the topic had when the scan began; a record superseded under compaction is live
   until the cleaner has removed it, since a consumer reading from the beginning still gets it).
3. ``young``: it was written less than the grace period ago (by the S3 server's clock, not ours),
   and the grace period is longer than the transaction timeout.
4. ``unmanaged``: its source topic is not one of the config's: this config cannot tell.
5. ``in_flight``: its source offset is at or past the relay's committed position for that partition
   (read before the envelopes): a transaction holding its envelope may still commit, or a retry
   may still find and use it.
6. ``expired``: it is older than every envelope of its partition still in the log (retention took
   its envelope); ``orphan``: otherwise (no committed envelope names it: the upload of an aborted
   transaction, or an envelope compaction removed).

Only ``expired`` and ``orphan`` objects are deleted. Why that is safe under a relay that keeps
writing: positions only move forward, and only when the transaction holding a partition's records
(and their envelopes) commits. An object below the committed position therefore belongs to a record
whose transaction is over; if no envelope names it now, none will: the relay never writes that
record again (unless its positions are reset: stop scheduled runs while you do that).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from kafka_lfs_relay.lfsgc.keys import KeyParts
from relay.message import SourcePartition

STATES: Final = ("live", "young", "in_flight", "unmanaged", "foreign", "orphan", "expired")
DELETABLE: Final = frozenset({"orphan", "expired"})
MEANING: Final = {
    "live": "named by an envelope still in the log",
    "young": "younger than the grace period: left alone",
    "in_flight": "at or past the relay's committed position: its transaction may still commit",
    "unmanaged": "of a source topic this config does not relay: left alone",
    "foreign": "not a key this relay writes: left alone",
    "orphan": "no committed envelope names it (an aborted transaction's upload, or an envelope compacted away)",
    "expired": "older than every envelope of its partition still in the log (retention removed its envelope)",
}


@dataclass(frozen=True)
class Knowledge:
    """What the scan learnt from Kafka, before listing the bucket."""

    live: frozenset[str]
    """Keys named by envelopes still in the target topics' logs."""
    positions: Mapping[SourcePartition, int]
    """The relay's committed position (next source offset) per source partition."""
    oldest: Mapping[SourcePartition, int]
    """The lowest source offset of a live envelope per source partition."""
    source_of: Mapping[str, str]
    """Source topic of each target topic (for keys that name the target topic)."""
    sources: frozenset[str]


def classify(parts: KeyParts | None, key: str, age: float, grace: float, known: Knowledge) -> str:
    """The state of the object at ``key`` (``parts`` as its key says, ``age`` in seconds); see the module docstring."""
    if parts is None:
        return "foreign"
    if key in known.live:
        return "live"
    if age < grace:
        return "young"
    topic = parts.topic if parts.topic is not None else known.source_of.get(parts.target_topic or "")
    if topic is None or topic not in known.sources:
        return "unmanaged"
    sp = SourcePartition(topic, parts.partition)
    position = known.positions.get(sp)
    if position is None or parts.offset >= position:
        return "in_flight"
    return "expired" if parts.offset < known.oldest.get(sp, position) else "orphan"


@dataclass
class Census:
    """Objects and bytes per state, and the keys that may be deleted."""

    objects: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    deletable: list[tuple[str, int, str]] = field(default_factory=list)
    """(key, size, state) of every object that may be deleted."""

    def add(self, key: str, size: int, state: str) -> None:
        self.objects[state] += 1
        self.bytes[state] += size
        if state in DELETABLE:
            self.deletable.append((key, size, state))

    @property
    def deletable_bytes(self) -> int:
        return sum(size for _, size, _ in self.deletable)
