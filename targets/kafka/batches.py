"""Building one transaction's records: target partitions and transforms. No I/O.

A batch of :class:`~relay.message.Message` objects becomes a :class:`Unit` of :data:`Record`
tuples, ready to produce. The builder is pure apart from the ``transform`` hook it is given, so
every rule here is unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from relay.message import Message, SourcePartition
from relay.settings import TopicConfig
from targets.kafka.partitioner import target_partition
from targets.kafka.positions import Entry

Record = tuple[Message, str, int, "list[tuple[str, bytes | None]] | None"]
"""(message, target topic, target partition, headers to send or None)."""


class Unit:
    """The records of one transaction: ``messages`` as written, or ``records`` already built.

    ``transformed`` keeps what ``transform`` returned, in order, so that however an attempt ends,
    no record is ever transformed twice (a hydrated record's fetch is consumed by its transform).
    ``batch_next`` is the next source offset of each source partition once the unit commits;
    ``last`` the indexes of the last record of each target partition; ``entries`` the positions
    the attempt that committed wrote (see ``targets.kafka.positions``).
    """

    __slots__ = ("batch_next", "built", "entries", "last", "messages", "records", "transformed")

    def __init__(self, messages: Sequence[Message], records: Sequence[Record] | None = None) -> None:
        self.messages = messages
        self.records: Sequence[Record] = records or []
        self.built = records is not None
        self.batch_next: dict[SourcePartition, int] = next_offsets(self.records)
        self.last: list[int] = last_indexes(self.records)
        self.transformed: list[Message] = []
        self.entries: dict[SourcePartition, Entry] = {}


def last_indexes(records: Sequence[Record]) -> list[int]:
    """Indexes of the last record of each target partition, in order."""
    last: dict[tuple[str, int], int] = {}
    for i, rec in enumerate(records):
        last[(rec[1], rec[2])] = i
    return sorted(last.values())


def next_offsets(records: Sequence[Record]) -> dict[SourcePartition, int]:
    """The next source offset of each source partition once ``records`` are committed."""
    out: dict[SourcePartition, int] = {}
    for rec in records:
        out[rec[0].source] = rec[0].source_offset + 1
    return out


class BatchBuilder:
    """Turns a unit's messages into records for the target topics whose partition counts it is given.

    ``partitions`` is shared with whoever prepares the topics and is read at build time.
    """

    def __init__(
        self,
        routes: Sequence[TopicConfig],
        partitions: Mapping[str, int],
        transform: Callable[[Message], Message] | None = None,
    ) -> None:
        self.routes = {r.source: r for r in routes}
        self.partitions = partitions
        self.transform = transform

    def build(
        self, unit: Unit, early: Callable[[Record], None] | None = None
    ) -> tuple[list[Record], dict[SourcePartition, int], list[int]]:
        """The unit as records, the next source offset per source partition once it is committed,
        and the indexes of the last record of each target partition.

        ``early`` is given each record as soon as a later record of the batch lands in the same
        target partition (so it can no longer be that partition's last): the first attempt
        produces it then, while ``transform`` may still be waiting for the records after it.
        """
        out: list[Record] = []
        last_in_partition: dict[tuple[str, int], int] = {}
        # Per-record bookkeeping keyed by plain tuples; SourcePartitions only for the batch's few.
        newest: dict[tuple[str, int], int] = {}
        transform, routes, counts = self.transform, self.routes, self.partitions
        done = unit.transformed
        for i, msg in enumerate(unit.messages):
            if transform is not None:
                if i < len(done):
                    msg = done[i]
                else:
                    msg = transform(msg)
                    done.append(msg)
            route = routes[msg.source_topic]
            topic = msg.topic
            count = counts[topic]
            if topic == route.target:
                partition = target_partition(route.partition, msg.key, msg.source_partition, count)
            else:
                partition = msg.source_partition % count
            before = last_in_partition.get((topic, partition))
            last_in_partition[(topic, partition)] = len(out)
            newest[(msg.source_topic, msg.source_partition)] = msg.source_offset
            out.append((msg, topic, partition, list(msg.headers) if msg.headers else None))
            if early is not None and before is not None:
                early(out[before])
        batch_next = {SourcePartition(t, p): off + 1 for (t, p), off in newest.items()}
        return out, batch_next, sorted(last_in_partition.values())
