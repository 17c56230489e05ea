"""Producing a plan's records inside a transaction: the tight loop, offsets for the map, naming a rejected record.

A chunk's consumed records are produced in one loop with positional arguments and no callback
(the only Python step per record on the Kafka target's path), except the last record of a target
partition whose offset the offset map needs, which carries an :class:`OffsetCollector`. Made
records are produced one call each. After a failed transaction the retry runs *diagnosing*:
every record carries a :class:`FailureCollector`, so that a record the broker rejects for good
is named (by its source coordinates, never its payload).

With provenance on, every record also carries the header of the source cluster it was read from
(:mod:`targets.kafka.provenance`), appended after its own headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any, NamedTuple, cast

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import Message as KafkaMessage

from relay.message import Message
from relay.run import describe
from targets.kafka.plan import Chunk, Placed
from targets.kafka.provenance import Stamp

PERMANENT_RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.INVALID_TIMESTAMP,
    }
)
"""Errors a record can never get past by retrying: the relay stops and names the record."""

Where = tuple[str, int]
Offsets = dict[Where, int]


class Rejected(NamedTuple):
    """How an error names a record the target rejected."""

    coordinates: str
    size: int
    topic: str


Failed = list[tuple[Rejected, KafkaError]]


class RecordRejected(Exception):
    """The client refused a record outright; ``message`` names it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OffsetCollector:
    """A delivery callback that notes the offset a record got (then hands failures on, when diagnosing)."""

    __slots__ = ("offsets", "then", "where")

    def __init__(self, offsets: Offsets, where: Where, then: Any) -> None:
        self.offsets = offsets
        self.where = where
        self.then = then

    def __call__(self, err: KafkaError | None, record: Any) -> None:
        if err is None:
            self.offsets[self.where] = record.offset()
        elif self.then is not None:
            self.then(err, record)


class FailureCollector:
    """A delivery callback that notes which record failed, used only when diagnosing a failed batch."""

    __slots__ = ("cluster", "failed", "rec")

    def __init__(self, failed: Failed, rec: Message | KafkaMessage, cluster: str) -> None:
        self.failed = failed
        self.rec = rec
        self.cluster = cluster

    def __call__(self, err: KafkaError | None, _record: object) -> None:
        if err is not None:
            self.failed.append((_rejected(self.rec, self.cluster), err))


def _rejected(rec: Message | KafkaMessage, cluster: str) -> Rejected:
    if isinstance(rec, Message):
        return Rejected(rec.coordinates(), rec.size, rec.topic)
    key, value = rec.key(), rec.value()
    size = 64 + (len(key) if key else 0) + (len(value) if value else 0)
    return Rejected(describe(cluster, rec), size, rec.topic() or "")


def _refused(exc: KafkaException, rec: Message | KafkaMessage, topic: str, cluster: str) -> None:
    """A record the client refused: name it if no retry can help, else raise ``exc`` on."""
    err = exc.args[0]
    if err.code() in PERMANENT_RECORD_ERRORS:
        what = _rejected(rec, cluster)
        raise RecordRejected(f"target cannot take record {what.coordinates} bound for {topic}: {err.str()}") from None
    raise exc


class Production:
    """One attempt at producing a plan's records with one producer.

    ``offsets`` collects the offsets the map needs (``wants_offsets``: a record carries a callback
    for one); ``failed`` the records that failed, when ``diagnose`` is on; ``stamps`` the provenance
    header added to records of each source cluster (None: none).
    """

    def __init__(self, producer: Producer, diagnose: bool, stamps: Mapping[str, Stamp] | None = None) -> None:
        self.producer = producer
        self.diagnose = diagnose
        self.stamps = stamps
        self.stamp: Stamp | None = None
        self.cluster = ""
        self.offsets: Offsets = {}
        self.wants_offsets = False
        self.failed: Failed = []

    def consumed(self, chunk: Chunk, want_offset: bool) -> None:
        """Produce a chunk's records to its target partition, in order; the last one's offset when ``want_offset``."""
        self.cluster = chunk.cluster
        self.stamp = self.stamps[chunk.cluster] if self.stamps is not None else None
        topic, partition, runs = chunk.topic, chunk.partition, chunk.runs
        for n, recs in enumerate(runs):
            final = n == len(runs) - 1
            stop = len(recs) - 1 if final else len(recs)
            if self.diagnose:
                for rec in islice(recs, stop):
                    self._one(rec, topic, partition, FailureCollector(self.failed, rec, self.cluster))
            elif self.stamp is not None:
                self._loop_stamped(recs, stop, topic, partition, self.stamp)
            else:
                self._loop(recs, stop, topic, partition)
            if final:
                last = recs[-1]
                cb: Any = FailureCollector(self.failed, last, self.cluster) if self.diagnose else None
                if want_offset:
                    cb = OffsetCollector(self.offsets, (topic, partition), cb)
                    self.wants_offsets = True
                self._one(last, topic, partition, cb)

    def _loop(self, recs: Sequence[KafkaMessage], stop: int, topic: str, partition: int) -> None:
        """Queue ``recs[:stop]`` without a callback, waiting while the producer's queue is full."""
        produce = self.producer.produce
        start = i = 0
        while start < stop:
            try:
                for i, rec in enumerate(islice(recs, start, stop), start):  # noqa: B007  # i: where to resume
                    ts = rec.timestamp()[1]
                    # Positional: topic, value, key, partition, callback, on_delivery, timestamp, headers
                    # (keyword arguments cost the client a slower parse per record).
                    produce(topic, rec.value(), rec.key(), partition, None, None, ts if ts > 0 else 0, rec.headers())
                return
            except BufferError:
                start = i
                self.producer.poll(0.05)
            except KafkaException as exc:
                _refused(exc, recs[i], topic, self.cluster)

    def _loop_stamped(self, recs: Sequence[KafkaMessage], stop: int, topic: str, partition: int, stamp: Stamp) -> None:
        """As :meth:`_loop`, each record with the provenance header ``stamp`` after its own."""
        produce = self.producer.produce
        start = i = 0
        while start < stop:
            try:
                for i, rec in enumerate(islice(recs, start, stop), start):  # noqa: B007  # i: where to resume
                    ts = rec.timestamp()[1]
                    headers: Any = rec.headers()
                    produce(
                        topic, rec.value(), rec.key(), partition, None, None, ts if ts > 0 else 0,
                        headers + stamp if headers else stamp,
                    )  # fmt: skip
                return
            except BufferError:
                start = i
                self.producer.poll(0.05)
            except KafkaException as exc:
                _refused(exc, recs[i], topic, self.cluster)

    def _one(self, rec: KafkaMessage, topic: str, partition: int, cb: Any) -> None:
        """Queue one consumed record with delivery callback ``cb`` (or None)."""
        ts = rec.timestamp()[1]
        headers: Any = rec.headers()
        if self.stamp is not None:
            headers = headers + self.stamp if headers else self.stamp
        while True:
            try:
                self.producer.produce(topic, rec.value(), rec.key(), partition, cb, None, ts if ts > 0 else 0, headers)
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                _refused(exc, rec, topic, self.cluster)

    def made(self, placed: Placed, want_offset: bool) -> None:
        """Queue one made record; its offset when ``want_offset``."""
        msg, topic, partition = placed
        cb: Any = FailureCollector(self.failed, msg, msg.source_cluster) if self.diagnose else None
        if want_offset:
            cb = OffsetCollector(self.offsets, (topic, partition), cb)
            self.wants_offsets = True
        headers = cast(Any, list(msg.headers) if msg.headers else None)
        if self.stamps is not None:
            stamp = self.stamps[msg.source_cluster]
            headers = headers + stamp if headers else stamp
        ts = msg.timestamp_ms if msg.timestamp_ms > 0 else 0
        while True:
            try:
                self.producer.produce(topic, msg.value, msg.key, partition, cb, None, ts, headers)
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                _refused(exc, msg, topic, msg.source_cluster)
