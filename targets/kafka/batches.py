"""Building one transaction's records: target partitions, transforms and resume positions. No I/O.

A batch of :class:`~relay.message.Message` objects becomes a :class:`Unit` of :data:`Record`
tuples, ready to produce. The builder is pure apart from the ``transform`` hook it is given, so
every rule here is unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from relay.message import Message, SourcePartition
from relay.settings import TopicConfig
from targets.kafka import positions
from targets.kafka.partitioner import target_partition

Record = tuple[Message, str, int, "list[tuple[str, bytes | None]] | None"]
"""(message, target topic, target partition, headers to send or None)."""


class Unit:
    """The records of one transaction: ``messages`` as written, or ``records`` already built.

    ``transformed`` keeps what ``transform`` returned, in order, so that however an attempt ends,
    no record is ever transformed twice (a hydrated record's fetch is consumed by its transform).
    """

    __slots__ = ("batch_next", "built", "messages", "records", "transformed")

    def __init__(self, messages: Sequence[Message], records: Sequence[Record] | None = None) -> None:
        self.messages = messages
        self.records: Sequence[Record] = records or []
        self.built = records is not None
        self.batch_next: dict[SourcePartition, int] = {}
        self.transformed: list[Message] = []


class BatchBuilder:
    """Turns a unit's messages into records for the target topics whose partition counts it is given.

    ``partitions`` is shared with whoever prepares the topics and is read at build time.
    ``per_partition`` (group mode) puts only the record's own source partition in its position.
    """

    def __init__(
        self,
        routes: Sequence[TopicConfig],
        partitions: Mapping[str, int],
        transform: Callable[[Message], Message] | None = None,
        per_partition: bool = False,
    ) -> None:
        self.routes = {r.source: r for r in routes}
        self.partitions = partitions
        self.transform = transform
        self.per_partition = per_partition

    def build(
        self,
        unit: Unit,
        committed: Mapping[SourcePartition, int],
        early: Callable[[Record], None] | None = None,
    ) -> tuple[list[Record], dict[SourcePartition, int], list[int]]:
        """The unit as records, with ``kfr-pos`` on each target partition's last record, the next
        source offset per source partition once it is committed, and the indexes of those last
        records. ``committed`` holds the positions already committed, for the vectors.

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
        advanced = {**committed, **batch_next}
        for index in last_in_partition.values():
            msg, topic, partition, headers = out[index]
            route = routes[msg.source_topic]
            if self.per_partition or (route.partition == "preserve" and topic == route.target):
                vector = {msg.source_partition: advanced[msg.source]}
            else:
                vector = {sp.partition: off for sp, off in advanced.items() if sp.topic == msg.source_topic}
            position = (positions.HEADER, positions.encode(msg.source_topic, vector))
            out[index] = (msg, topic, partition, [*(headers or ()), position])
        return out, batch_next, sorted(last_in_partition.values())
