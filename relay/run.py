"""The unit of the record path: a run of one source partition's records, as consumed.

The relay cuts each poll into runs, one per source partition, in source order, and hands them to
the target; targets batch runs, commit them and acknowledge them as runs. A record is never
copied into an object of the relay's own unless something needs one: a :class:`Message` is built
only when asked for (:meth:`Run.messages`: a filter that reads ``Message`` objects, a transform, a
custom target), once per record.

A run may hold no record at all. Its ``next`` is then *progress*: the relay read the partition up
to there, and nothing below it is left to write (records a filter dropped, transaction markers, a
gap skipped under ``on_gap: skip``). Progress travels in the same runs, through the same batches,
as records: a target that drops what it holds (a restart) drops the progress with it, so a
position is never committed for records the target does not hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import chain, groupby
from typing import Any

from confluent_kafka import Message as KafkaMessage

from relay.kafkautil import headers_of
from relay.message import Message, SourcePartition, record_size

# The client's own method descriptors: map() calls them without a Python frame.
_KEY: Callable[[Any], bytes | None] = KafkaMessage.key
_HEADERS: Callable[[Any], Any] = KafkaMessage.headers


def consumed_size(records: Sequence[KafkaMessage]) -> int:
    """What :func:`~relay.message.record_size` says of each consumed record, added up, with no Python
    step per record: 64 each, plus key and value lengths, plus header names and values."""
    headers = chain.from_iterable(filter(None, map(_HEADERS, records)))
    return (
        64 * len(records)
        + sum(map(len, records))  # a consumed record's len() is its value's
        + sum(map(len, filter(None, map(_KEY, records))))
        + sum(map(len, filter(None, chain.from_iterable(headers))))
    )


def describe(cluster: str, record: KafkaMessage) -> str:
    """``cluster/topic/partition@offset`` of a consumed record: how logs and errors name it."""
    return f"{cluster}/{record.topic()}/{record.partition()}@{record.offset()}"


class Run:
    """Records of one source partition read from ``cluster``, in source order, bound for ``target``.

    ``records`` are the records as consumed (``confluent_kafka.Message``, never an error event)
    or, once a target kept only the built form (:meth:`built`), :class:`Message` objects;
    ``next`` is the source offset after the run (past its last record, or further: progress);
    ``size`` what the run weighs against the relay's byte budget. A run is not changed once made:
    :meth:`kept`, :meth:`split` and :meth:`built` return new runs.
    """

    __slots__ = ("_messages", "cluster", "next", "records", "size", "source", "target")

    def __init__(
        self,
        cluster: str,
        source: SourcePartition,
        target: str,
        records: Sequence[Any],
        next_offset: int,
        size: int,
        messages: list[Message] | None = None,
    ) -> None:
        self.cluster = cluster
        self.source = source
        self.target = target
        self.records = records
        self.next = next_offset
        self.size = size
        self._messages = messages

    @classmethod
    def consumed(cls, cluster: str, source: SourcePartition, target: str, records: Sequence[KafkaMessage]) -> Run:
        """A run of consumed records (at least one); its ``next`` is past the last."""
        return cls(cluster, source, target, records, (records[-1].offset() or 0) + 1, consumed_size(records))

    @classmethod
    def progress(cls, cluster: str, source: SourcePartition, target: str, next_offset: int) -> Run:
        """A run with no record: the partition was read up to ``next_offset``."""
        return cls(cluster, source, target, (), next_offset, 0)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Run({self.cluster}/{self.source.topic}/{self.source.partition}: {len(self.records)} -> {self.next})"

    @property
    def is_built(self) -> bool:
        """Whether ``records`` are :class:`Message` objects (else consumed records)."""
        return bool(self.records) and isinstance(self.records[0], Message)

    def first_offset(self) -> int | None:
        """The source offset of the first record, or None for progress."""
        if not self.records:
            return None
        first = self.records[0]
        return first.source_offset if isinstance(first, Message) else (first.offset() or 0)

    def messages(self) -> list[Message]:
        """The records as :class:`Message` objects, built on the first call only."""
        if self._messages is None:
            if self.is_built:
                self._messages = list(self.records)
            else:
                self._messages = [self._message(rec) for rec in self.records]
        return self._messages

    def _message(self, rec: KafkaMessage) -> Message:
        key, value = rec.key(), rec.value()
        headers = headers_of(rec)
        topic, partition = self.source
        return Message(
            key, value, headers, self.target, self.cluster, topic, partition,
            rec.offset() or 0, rec.timestamp()[1], record_size(key, value, headers),
        )  # fmt: skip

    def coordinates(self, index: int) -> str:
        """``cluster/topic/partition@offset`` of the record at ``index``."""
        rec = self.records[index]
        return rec.coordinates() if isinstance(rec, Message) else describe(self.cluster, rec)

    def kept(self, keep: Sequence[bool]) -> Run:
        """This run with only the records ``keep`` is true for; ``next`` stays (what was dropped was read)."""
        if all(keep):
            return self
        records = [rec for rec, k in zip(self.records, keep, strict=True) if k]
        messages = None
        if self._messages is not None:
            messages = [msg for msg, k in zip(self._messages, keep, strict=True) if k]
        return Run(self.cluster, self.source, self.target, records, self.next, self._size_of(records), messages)

    def split(self, count: int) -> tuple[Run, Run]:
        """The first ``count`` records (0 < count < len) as a run that ends after them, and the rest."""
        head_records, tail_records = self.records[:count], self.records[count:]
        head_size = self._size_of(head_records)
        last = head_records[-1]
        head_next = (last.source_offset if isinstance(last, Message) else (last.offset() or 0)) + 1
        messages = self._messages
        head = Run(
            self.cluster, self.source, self.target, head_records, head_next, head_size,
            None if messages is None else messages[:count],
        )  # fmt: skip
        tail = Run(
            self.cluster, self.source, self.target, tail_records, self.next, self.size - head_size,
            None if messages is None else messages[count:],
        )  # fmt: skip
        return head, tail

    def built(self, messages: list[Message]) -> Run:
        """This run holding ``messages`` (one per record, in order) instead of the consumed records.

        The consumed records are let go: a target that keeps only a stand-in for a large value
        (the LFS offload) holds no copy of it from here on.
        """
        return Run(self.cluster, self.source, self.target, messages, self.next, self.size, messages)

    def weights(self) -> list[int]:
        """Each record's own size (:func:`record_size`), in order; one Python step per record."""
        if self.is_built:
            return [msg.size for msg in self.records]
        return [record_size(rec.key(), rec.value(), rec.headers() or ()) for rec in self.records]

    def _size_of(self, records: Sequence[Any]) -> int:
        if records and isinstance(records[0], Message):
            return sum(msg.size for msg in records)
        return consumed_size(records)


# The client's method descriptors for groupby(): called from C, no Python frame per record.
_TOPIC = KafkaMessage.topic
_PARTITION = KafkaMessage.partition


def cut(cluster: str, records: Sequence[KafkaMessage], targets: Mapping[str, str]) -> list[Run]:
    """``records`` (consumed from ``cluster``, no error event among them) as one run per source partition,
    each in source order; ``targets`` names each source topic's target topic.

    A poll interleaves partitions in stretches; each stretch is taken whole (``groupby`` on the
    client's own methods, from C), so there is no Python step per record here.
    """
    parts: dict[tuple[str, int], list[KafkaMessage]] = {}
    if len(targets) == 1:
        (topic,) = targets
        for partition, stretch in groupby(records, _PARTITION):
            got = parts.get((topic, partition or 0))
            if got is None:
                parts[(topic, partition or 0)] = list(stretch)
            else:
                got.extend(stretch)
    else:
        for name, of_topic in groupby(records, _TOPIC):
            for partition, stretch in groupby(of_topic, _PARTITION):
                key = (name or "", partition or 0)
                got = parts.get(key)
                if got is None:
                    parts[key] = list(stretch)
                else:
                    got.extend(stretch)
    return [Run.consumed(cluster, SourcePartition(t, p), targets[t], recs) for (t, p), recs in parts.items()]
