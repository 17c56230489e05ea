"""Consumer groups moving to the target: their source offsets translated through the offset map, and committed.

A consumer group that switches from a source cluster to the target must start, in each target
partition, where the records it has not consumed yet begin. Under ``partition: preserve`` the
Kafka target records, for each transaction and each source partition it carries, the point (next
source offset, next target offset) of its mirrored target partition, written by the next
transaction (:mod:`targets.kafka.positions`). A group committed at source offset X (the next record it would
read) translates to the target offset of the newest point at or below X (:func:`translate_offset`):

* never past it, so no record at or after X is skipped: every record relayed from source offset
  s on lies at target offset t or later, whatever a filter dropped, whatever else was written to
  the target partition;
* exact when X is a point (a transaction boundary of that partition): nothing is re-read;
* otherwise the consumer re-reads the records relayed from [s, X): at most ``X - s`` of them
  (fewer when a filter dropped some or the source log has gaps), at most one transaction's worth
  while X is within the map's dense part (its newest 16 points, see :func:`positions.thin`).

A partition with no point at or below X (the relay has not committed it yet, or X lies before
the oldest point kept) translates to the target partition's log start: everything is re-read,
nothing skipped. Other partitionings (``key``, a fixed partition) mix source partitions in one
target partition; they have no per-partition translation and no map.

:class:`TargetGroups` does the target's side (offsets, members, commits, through the admin API);
:class:`PositionsTail` reads the positions topic incrementally for a process that translates
again and again.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from relay.kafkautil import list_offsets
from relay.logs import librdkafka_logger
from relay.message import SourcePartition
from relay.settings import ClusterConfig
from relay.target import TargetError
from targets.kafka import positions
from targets.kafka.positions import Entry, Point, PositionError

_TAIL_BATCH = 5000

TopicPartitionKey = tuple[str, int]
"""(topic, partition)."""


@dataclass(frozen=True)
class Translation:
    """Where a group committed at ``committed`` on source partition ``source`` starts on the target.

    ``target`` is the offset to commit in ``target_topic``, partition ``source.partition``;
    ``reread`` the most records a consumer switching there reads a second time; ``point`` the map
    point used (None: none at or below ``committed``, so the log start); ``note`` says, when it
    needs saying, why the translation is not exact.
    """

    source: SourcePartition
    target_topic: str
    committed: int
    target: int
    reread: int
    point: Point | None
    note: str = ""

    @property
    def exact(self) -> bool:
        """Whether ``committed`` is a map point: the consumer re-reads nothing."""
        return self.point is not None and self.point[0] == self.committed and self.target == self.point[1]


def translate_offset(
    source: SourcePartition, target_topic: str, entry: Entry | None, committed: int, start: int, end: int
) -> Translation:
    """Translate source offset ``committed`` through ``entry``'s map (see the module docstring).

    ``start`` and ``end`` are the target partition's log start and end offsets: a translation
    never points below the log start (a consumer committed there would be reset by its
    ``auto.offset.reset``, possibly to the end) nor past the end.
    """
    points = entry.map if entry is not None else ()
    point = positions.translate(points, committed)
    if point is None:
        # Everything on the target from its log start up to the oldest point was relayed from
        # source offsets below that point's; the group read at most `committed` of them.
        # With no map at all, what the group read may still be relayed (and read again): up to all of it.
        reread = max(0, min(committed, points[0][1] - start)) if points else committed
        why = "no offset-map point at or below it" if points else "no offset map for this partition"
        return Translation(source, target_topic, committed, start, reread, None, f"{why}: from the target's log start")
    s, t = point
    if t > end:
        return Translation(
            source, target_topic, committed, start, max(0, min(committed, end - start)), None,
            "the offset map points past the end of the target partition (was it recreated?): from its log start",
        )  # fmt: skip
    reread = committed - s
    notes = []
    if t < start:
        t = start
        notes.append("records below the target's log start are deleted")
    if entry is not None and committed > entry.next >= 0:
        notes.append(f"the relay has reached only {entry.next}; the rest is re-read as it is relayed")
    elif reread:
        notes.append(f"mid-batch: rounded down to the batch boundary at {s}")
    return Translation(source, target_topic, committed, t, reread, point, "; ".join(notes))


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc)


class TargetGroups:
    """The target cluster's side of moving a consumer group: log offsets, members, committed offsets, commits."""

    def __init__(self, cluster: ClusterConfig, timeout: float) -> None:
        self.cluster = cluster
        self.timeout = timeout
        conf: dict[str, Any] = {**cluster.client_config(), "logger": librdkafka_logger()}
        self._admin = AdminClient(conf)

    def _fail(self, doing: str, exc: BaseException) -> TargetError:
        return TargetError(f"target {self.cluster.name}: {doing}: {_error_text(exc)}")

    def log_range(self, partitions: Collection[TopicPartitionKey]) -> dict[TopicPartitionKey, tuple[int, int]]:
        """(log start, end) of each of ``partitions``; one that does not exist is left out."""
        if not partitions:
            return {}
        try:
            md = self._admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise self._fail("reading metadata", exc) from None
        present = [(t, p) for t, p in partitions if t in md.topics and p in md.topics[t].partitions]
        if not present:
            return {}
        every = IsolationLevel.READ_UNCOMMITTED
        try:
            start = list_offsets(self._admin, present, OffsetSpec.earliest(), every, self.timeout)  # type: ignore[no-untyped-call]
            end = list_offsets(self._admin, present, OffsetSpec.latest(), every, self.timeout)  # type: ignore[no-untyped-call]
        except KafkaException as exc:
            raise self._fail("reading log offsets", exc) from None
        return {tp: (start[tp], end[tp]) for tp in present}

    def active_members(self, group: str) -> list[str]:
        """The members of ``group`` on the target, as ``client.id@host`` (empty: nobody consumes with it)."""
        try:
            desc = self._admin.describe_consumer_groups([group], request_timeout=self.timeout)[group].result(
                timeout=self.timeout
            )
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                return []
            raise self._fail(f"describing group {group!r}", exc) from None
        return [f"{m.client_id}@{m.host}" for m in (desc.members or [])]

    def committed(self, group: str) -> dict[TopicPartitionKey, int]:
        """The offsets ``group`` has committed on the target."""
        return {tp: offset for tp, (offset, _) in self.commits(group).items()}

    def commits(self, group: str) -> dict[TopicPartitionKey, tuple[int, str]]:
        """The offsets ``group`` has committed on the target, each with the metadata committed with it."""
        try:
            res = self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout
            )[group].result(timeout=self.timeout)
        except KafkaException as exc:
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                return {}
            raise self._fail(f"reading the offsets of group {group!r}", exc) from None
        return {
            (tp.topic, tp.partition): (tp.offset, tp.metadata or "")
            for tp in (res.topic_partitions or [])
            if tp.offset >= 0
        }

    def commit(self, group: str, offsets: Mapping[TopicPartitionKey, int], metadata: str) -> None:
        """Commit ``offsets`` for ``group`` on the target (the broker refuses it while the group has members)."""
        if not offsets:
            return
        tps = [TopicPartition(t, p, off, metadata=metadata) for (t, p), off in sorted(offsets.items())]
        try:
            res = self._admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, tps)], request_timeout=self.timeout
            )[group].result(timeout=self.timeout)
        except KafkaException as exc:
            raise self._fail(f"committing offsets of group {group!r}", exc) from None
        for tp in res.topic_partitions or []:
            if tp.error is not None:
                raise TargetError(
                    f"target {self.cluster.name}: committing group {group!r} at {tp.topic}/{tp.partition}: "
                    f"{tp.error.str()}"
                )


class PositionsTail:
    """The positions topic of relay ``name``, read incrementally: each :meth:`read` takes what was committed since.

    Made for a process that translates again and again while the relay writes: it keeps its
    consumer and its entries between calls. Until every partition has been read once to its end as
    the broker gave it (the last stable offset: an open transaction is not waited for), a call waits
    for those ends, since the first polls after an assignment come back empty before anything was
    fetched, and a first pass that took that for the end would translate without a map. Later calls
    read what is there now, until a poll comes back short. Every call stops after ``timeout``
    seconds at most. An entry read a little late is still true: its map points stay facts, so a
    translation with it rounds down further, never past.
    """

    def __init__(self, cluster: ClusterConfig, topic: str, name: str, timeout: float) -> None:
        self.cluster = cluster
        self.topic = topic
        self.timeout = timeout
        self._prefix = f"{name}/".encode()
        self._name = name
        self._entries: dict[SourcePartition, Entry] = {}
        self._consumer: Any = None
        self._partitions = 0
        self._at_end: set[int] = set()  # partitions that reported their end at least once

    def _open(self) -> Any:
        # A tail re-reads from the earliest record left if the log start ever passes it: entries are newest-wins.
        consumer = Consumer(
            {**positions.reader_config(self.cluster), "auto.offset.reset": "earliest", "logger": librdkafka_logger()}
        )
        md = consumer.list_topics(self.topic, timeout=self.timeout)
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            consumer.close()
            raise TargetError(f"target {self.cluster.name}: positions topic {self.topic!r} cannot be read yet")
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in tmd.partitions])
        self._partitions = len(tmd.partitions)
        return consumer

    def read(self, wanted: Collection[SourcePartition]) -> dict[SourcePartition, Entry]:
        """The newest entry read so far of each of ``wanted`` that has one, after reading what is there now."""
        if self._consumer is None:
            self._consumer = self._open()
        consumer = self._consumer
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            batch = consumer.consume(_TAIL_BATCH, 0.5)
            for msg in batch:
                err = msg.error()
                if err is None:
                    self._take(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition())
                else:
                    raise TargetError(
                        f"target {self.cluster.name}: reading positions topic {self.topic!r}: {err.str()}"
                    )
            # A partition reports its end once per time it reaches it, so the set is kept across calls
            # (a first call that timed out or failed is carried on by the next).
            if len(self._at_end) == self._partitions and len(batch) < _TAIL_BATCH:
                break  # every partition was read to its end once, and what was fetched is taken
        return {sp: entry for sp, entry in self._entries.items() if sp in wanted}

    def _take(self, msg: Any) -> None:
        raw_key = msg.key()
        if not raw_key or not raw_key.startswith(self._prefix):
            return
        parsed = positions.parse_key(raw_key)
        if parsed is None or parsed[0] != self._name:
            return
        sp = parsed[1]
        value = msg.value()
        if value is None:
            self._entries.pop(sp, None)
            return
        try:
            self._entries[sp] = positions.decode(value)
        except PositionError as exc:
            raise TargetError(
                f"target {self.cluster.name}: positions topic {self.topic!r} record {msg.partition()}@{msg.offset()} "
                f"({sp.topic}/{sp.partition}) cannot be read: {exc}"
            ) from None

    def close(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
