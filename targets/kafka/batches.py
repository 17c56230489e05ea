"""Building one transaction's records: target partitions and transforms. No I/O.

A batch of :class:`~relay.message.Message` objects becomes a :class:`Unit` of :data:`Record`
tuples, ready to produce. The builder is pure apart from the ``transform`` hook it is given, so
every rule here is unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import Message as KafkaMessage

from relay.message import Message, RawBatch, SourcePartition
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


class RawUnit:
    """The records of one transaction on the passthrough fast path, as consumed.

    ``runs`` holds, per source partition, its target topic, its target partition and its records in
    source order (the lists of the raw batches it came in, not copied); ``batch_next`` and
    ``entries`` as in :class:`Unit`.
    """

    __slots__ = ("batch_next", "count", "entries", "runs")

    def __init__(self, runs: list[tuple[str, int, list[list[KafkaMessage]]]], batch_next: dict[SourcePartition, int]):
        self.runs = runs
        self.batch_next = batch_next
        self.count = sum(len(recs) for _, _, lists in runs for recs in lists)
        self.entries: dict[SourcePartition, Entry] = {}


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

    def raw_unit(self, batches: Sequence[RawBatch], only: SourcePartition | None = None) -> RawUnit:
        """The fast path's unit of ``batches`` (of source partition ``only``, if given): per source
        partition, its target partition (``preserve``: the same; a number: that one; ``key`` never
        takes this path) and its records in order; positions from each partition's newest record."""
        merged: dict[SourcePartition, list[list[KafkaMessage]]] = {}
        for batch in batches:
            for sp, recs in batch.parts.items():
                if only is None or sp == only:
                    merged.setdefault(sp, []).append(recs)
        runs: list[tuple[str, int, list[list[KafkaMessage]]]] = []
        batch_next: dict[SourcePartition, int] = {}
        for sp, lists in merged.items():
            route = self.routes[sp.topic]
            mode = route.partition
            if mode == "key":
                raise ValueError(f"topic {sp.topic}: partition: key does not take the passthrough path")
            runs.append((route.target, sp.partition if mode == "preserve" else mode, lists))
            batch_next[sp] = (lists[-1][-1].offset() or 0) + 1
        return RawUnit(runs, batch_next)
