"""Which source records are paired with which target records: the offset map cut into segments, and reading them.

The relay's positions topic holds, for each source partition, the next source offset to read and
the offset map: points *(s, t)* such that every record relayed from source offsets below *s* lies
below target offset *t*, and every one from *s* on at *t* or later (:mod:`targets.kafka.positions`).
Between two points the source records and the target records are therefore the same records, in
the same order, unless the mirror is broken: each such pair of ranges is a :class:`Segment`,
aligned on its own (:func:`kafka_lfs_relay.verify.align.align`).

The relayed range ends at the newest point (what the relay has committed when verify starts: a
relay that keeps writing does not move it). It begins at the newest point at or below ``--from``
(a source offset, rounded down to a transaction boundary), or, without one, at the log starts of
both partitions: that first segment may hold target records older than the mirror (another
producer's, or records the source has deleted since), which are counted apart, not as extra. A
point below either log start cannot begin a segment: records relayed below the target's log start
are missing from the target, those below the source's are not compared.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from relay.errors import RelayError
from relay.logs import librdkafka_logger
from relay.settings import ClusterConfig
from targets.kafka.positions import Entry, Point

_BATCH: Final = 2000
STALL: Final = 60.0
"""Seconds a read may go without a record before verify gives up, naming where it stopped."""


class VerifyError(RelayError):
    """verify cannot go on; the message names the cluster, topic and partition."""

    code = "verify"


@dataclass(frozen=True)
class Segment:
    """Source offsets [src_start, src_end) and target offsets [tgt_start, tgt_end), the same records if all is well."""

    src_start: int
    src_end: int
    tgt_start: int
    tgt_end: int
    head: bool = False
    """The first segment, begun at the log starts: it may hold target records older than the mirror."""


def segments(entry: Entry, source_start: int, target_start: int, from_offset: int | None = None) -> list[Segment]:
    """The segments of one partition's relayed range (see the module docstring); empty if nothing is comparable."""
    points = [p for p in entry.map if p[0] >= source_start and p[1] >= target_start]
    if not points or entry.map[-1] not in points:
        return []
    begin: Point | None = None
    if from_offset is not None:
        below = [p for p in points if p[0] <= from_offset]
        begin = below[-1] if below else None
    head = begin is None
    if begin is None:
        begin = (source_start, target_start)
    ordered = [begin, *(p for p in points if p[0] > begin[0] and p[1] >= begin[1])]
    out: list[Segment] = []
    for (s0, t0), (s1, t1) in pairwise(ordered):
        out.append(Segment(s0, s1, t0, t1, head=head and not out))
    return out


def consumer_config(cluster: ClusterConfig) -> dict[str, Any]:
    """A read_committed reader of ``cluster`` that commits nothing and never jumps (without its logger)."""
    conf: dict[str, Any] = {
        # Ranges are read one partition after another: a fetch long-polling at the end of one would hold
        # up the first fetch of the next (one connection to the broker), so long polls stay short.
        "fetch.wait.max.ms": 20,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        **cluster.client_config(),
        "group.id": f"kafka-lfs-relay-verify-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "error",
    }
    # librdkafka refuses a consumer whose fetch.max.bytes is below its message.max.bytes, which the
    # lfs target raises on its cluster for records up to its threshold.
    conf["fetch.max.bytes"] = max(int(conf["fetch.max.bytes"]), int(conf.get("message.max.bytes", 0)))
    return conf


class RangeReader:
    """Committed records of one partition at a time, from an offset up to (not including) another."""

    def __init__(self, cluster: ClusterConfig, stall: float = STALL) -> None:
        self.cluster = cluster
        self.stall = stall
        self._consumer = Consumer({**consumer_config(cluster), "logger": librdkafka_logger()})

    def read(self, topic: str, partition: int, start: int, end: int) -> Iterator[KafkaMessage]:
        """The records in [start, end) of ``topic``/``partition``, in order; raises VerifyError if reading stalls."""
        if start >= end:
            return
        consumer = self._consumer
        consumer.assign([TopicPartition(topic, partition, start)])
        last_progress = time.monotonic()
        reached = start
        try:
            while True:
                # consume() waits for a full batch: never ask for more than the range holds, and not long.
                for msg in consumer.consume(max(1, min(_BATCH, end - reached)), 0.05):
                    err = msg.error()
                    offset = msg.offset() or 0
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise VerifyError(
                                f"{self._where(topic, partition)}: reading at offset {reached}: {err.str()}"
                            )
                        if offset >= end:  # the end of the partition is past the range (markers included)
                            return
                        continue
                    if offset >= end:
                        return
                    reached = offset + 1
                    last_progress = time.monotonic()
                    yield msg
                    if reached >= end:  # the range's last offset: nothing after it is asked for
                        return
                position = consumer.position([TopicPartition(topic, partition)])[0].offset
                if position >= end:
                    return
                if time.monotonic() - last_progress > self.stall:
                    raise VerifyError(
                        f"{self._where(topic, partition)}: no record past offset {reached} for {self.stall:.0f}s "
                        f"while reading up to {end} (a transaction left open there holds committed records back)"
                    )
        finally:
            consumer.unassign()

    def offset_for_time(self, topic: str, partition: int, ms: int) -> int:
        """The first offset whose timestamp is at or after ``ms`` (-1: none yet)."""
        found = self._consumer.offsets_for_times([TopicPartition(topic, partition, ms)], timeout=30)
        return int(found[0].offset)

    def _where(self, topic: str, partition: int) -> str:
        return f"cluster {self.cluster.name}: topic {topic} partition {partition}"

    def close(self) -> None:
        self._consumer.close()


def split(records: Iterator[KafkaMessage], bounds: Sequence[int]) -> Iterator[Iterator[KafkaMessage]]:
    """``records`` (in offset order) cut at each of ``bounds``: one iterator per range below each bound, in turn.

    Each iterator must be used up before the next is taken; records at or past the last bound are left unread.
    """
    pending: list[KafkaMessage] = []

    def below(bound: int) -> Iterator[KafkaMessage]:
        while True:
            msg = pending.pop() if pending else next(records, None)
            if msg is None:
                return
            if (msg.offset() or 0) >= bound:
                pending.append(msg)
                return
            yield msg

    for bound in bounds:
        yield below(bound)
