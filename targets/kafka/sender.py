"""The transactional sender: producers, one transaction per unit, retries, fencing.

One transactional producer writes everything, or, in group mode, one per owned source partition
whose ``transactional.id`` is derived from that partition: a new owner's ``init_transactions``
then fences the previous owner, even a paused one that wakes up later.

Every method but :meth:`release` runs on the Kafka target's sender thread (``release`` runs on the
relay's thread while the sender is idle: the target flushes or drops first).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import islice
from typing import Any, NamedTuple, cast

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import Message as KafkaMessage

from relay.backoff import backoff_delay
from relay.errors import passing
from relay.kafkautil import client_error_text, retriable
from relay.logs import librdkafka_logger
from relay.message import Message, SourcePartition
from relay.metrics import RelayMetrics
from relay.settings import ClusterConfig
from relay.target import TargetError, TargetRestart
from targets.kafka.batches import RawUnit, Record, Unit
from targets.kafka.settings import KafkaTargetConfig

log = structlog.get_logger("kafka_lfs_relay.target")

# Errors a record can never get past by retrying: the relay stops and names the record.
_PERMANENT_RECORD_ERRORS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.INVALID_TIMESTAMP,
}
_PERMANENT_CLIENT_ERRORS = {
    KafkaError._AUTHENTICATION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._SSL,
}

_FENCE_WINDOW = 300.0
_FENCE_LIMIT = 3

Key = SourcePartition | None
"""Which producer: None for the one producer, or the source partition it writes (group mode)."""

BuildFn = Callable[[Unit, "Callable[[Record], None] | None"], None]
"""Builds a unit's records in place, handing records to produce early to its second argument (see
``BatchBuilder.build``); those not handed over are ``unit.last``."""

PositionsFn = Callable[[Unit, Mapping[tuple[str, int], int]], Sequence[tuple[bytes, bytes]]]
"""The positions records (key, value) of a unit, given the offset of the last record of each
target partition (topic, partition) it wrote."""

RawPositionsFn = Callable[[RawUnit, Mapping[tuple[str, int], int]], Sequence[tuple[bytes, bytes]]]
"""The same for a unit of the passthrough fast path."""


def producer_config(cluster: ClusterConfig, transactional_id: str, transaction_timeout: float) -> dict[str, Any]:
    """The librdkafka properties of a transactional producer, without its callbacks: the relay's
    defaults, then the cluster's own properties, then what transactions need."""
    return {
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "queue.buffering.max.messages": 1_000_000,
        **cluster.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "transactional.id": transactional_id,
        "transaction.timeout.ms": int(transaction_timeout * 1000),
    }


class TransactionalSender:
    """Commits units of records as Kafka transactions, each retried whole until durable."""

    def __init__(
        self,
        config: KafkaTargetConfig,
        transactional_id: str,
        positions_topic: str,
        metrics: RelayMetrics,
        per_partition: bool,
        map_offsets: bool,
    ) -> None:
        self._cluster: ClusterConfig = config.cluster
        self.positions_topic = positions_topic
        self.map_offsets = map_offsets
        """Whether positions need the offsets records got (the offset map, under partition: preserve)."""
        self._retry = config.retry
        self._txn_timeout = config.transaction_timeout
        self._txn_id = transactional_id
        self._metrics = metrics
        self.per_partition = per_partition
        self._producers: dict[Key, Producer] = {}
        self.lost: set[SourcePartition] = set()
        """Group mode: partitions another instance took over; their records are abandoned."""
        self._client_error: KafkaError | None = None
        self._restarts: list[float] = []

    # -- producers ---------------------------------------------------------------------------------
    def on_client_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: remembers a permanent or fatal client error."""
        if err.code() in _PERMANENT_CLIENT_ERRORS or err.fatal():
            self._client_error = err

    def raise_if_fatal(self, doing: str) -> None:
        """Raise a :class:`TargetError` naming the cluster if a permanent client error was seen."""
        err = self._client_error
        if err is not None and err.code() in _PERMANENT_CLIENT_ERRORS:
            raise TargetError(f"target {self._cluster.name}: {doing}: {client_error_text(err.str())}")

    def key(self, sp: SourcePartition) -> Key:
        """The producer that writes ``sp``."""
        return sp if self.per_partition else None

    def _txn_id_for(self, key: Key) -> str:
        return self._txn_id if key is None else f"{self._txn_id}.{key.topic}.{key.partition}"

    def producer(self, key: Key) -> Producer:
        """The producer of ``key``, initialised (which fences any older writer) on first use."""
        producer = self._producers.get(key)
        if producer is None:
            producer = self._producers[key] = self._new_producer(key)
        return producer

    def _new_producer(self, key: Key) -> Producer:
        txn_id = self._txn_id_for(key)
        conf = {
            **producer_config(self._cluster, txn_id, self._txn_timeout),
            "error_cb": self.on_client_error,
            "logger": librdkafka_logger(),
        }
        producer = Producer(conf)
        attempt = 0
        while True:
            try:
                producer.init_transactions(max(5.0, self._txn_timeout))
                return producer
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                self.raise_if_fatal(f"initialising transactions as {txn_id!r}")
                if not err.retriable() or attempt >= 5:
                    error = TargetError(
                        f"target {self._cluster.name}: could not initialise transactional producer "
                        f"{txn_id!r}: {err.str()}"
                    )
                    raise (passing(error) if retriable(err) else error) from None
                attempt += 1
                time.sleep(backoff_delay(self._retry.min, self._retry.max, attempt))

    def release(self, partitions: Sequence[SourcePartition]) -> None:
        """Group mode: stop writing ``partitions``; their producers abort what they hold and are dropped."""
        self.lost |= set(partitions)
        for sp in partitions:
            producer = self._producers.pop(sp, None) if self.per_partition else None
            if producer is not None:
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(1)

    def close(self) -> None:
        """Abort what every producer holds (if the cluster answers within a few seconds) and drop them."""
        producers, self._producers = list(self._producers.values()), {}
        for producer in producers:
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(5)

    # -- one transaction ------------------------------------------------------------------------------
    def commit(self, key: Key, unit: Unit, build: BuildFn, produce_early: bool, positions: PositionsFn) -> bool:
        """Commit ``unit`` with the producer of ``key``; False if that partition was lost meanwhile.

        A unit not built yet is built by the first attempt, which (with ``produce_early``)
        produces while it builds; a retry builds what is left without producing, then re-sends
        every record in order. Last in every attempt, ``positions`` gives the positions records
        of the unit, knowing the offsets the last record of each target partition got (when
        ``map_offsets``: then the records are flushed first, inside the transaction).
        """

        def send(producer: Producer, attempt: int, diagnose: bool, failed: Failed, offsets: Offsets) -> None:
            todo: Sequence[int] = range(len(unit.records))
            if not unit.built:
                early = None
                if attempt == 0 and produce_early:
                    # Bound to this producer and this transaction: records produced early
                    # belong to it, and a retry re-sends them in a transaction of its own.
                    def early(rec: Record, producer: Producer = producer) -> None:
                        self._produce(producer, *rec, None)

                build(unit, early)
                todo = unit.last if early is not None else range(len(unit.records))
            last = set(unit.last) if self.map_offsets else set()
            records = unit.records
            for i in todo:
                msg, topic, partition, headers = records[i]
                cb: Any = _FailureCollector(failed, msg) if diagnose else None
                if i in last:
                    cb = _OffsetCollector(offsets, (topic, partition), cb)
                self._produce(producer, msg, topic, partition, headers, cb)
            if last:
                self._flush(producer)

        def count() -> int:
            return len(unit.records) if unit.built else len(unit.messages)

        return self._transact(key, send, partial(positions, unit), count)

    def commit_raw(self, key: Key, unit: RawUnit, positions: RawPositionsFn, cluster: str) -> bool:
        """Commit a unit of the passthrough fast path, as :meth:`commit` does (``cluster``: the
        source the records were read from, to name a record the target rejects)."""
        return self._transact(
            key,
            partial(self._send_raw, unit, cluster),
            partial(positions, unit),
            lambda: unit.count,
        )

    def _transact(
        self,
        key: Key,
        send: Callable[[Producer, int, bool, Failed, Offsets], None],
        positions: Callable[[Offsets], Sequence[tuple[bytes, bytes]]],
        count: Callable[[], int],
    ) -> bool:
        """One transaction with the producer of ``key``, retried whole until durable: ``send`` produces
        the records (attempt number, whether to note which record fails), ``positions`` the positions
        records, given the offsets the last records got; False if the partition was lost meanwhile."""
        attempt = 0
        diagnose = False
        while True:
            if key is not None and key in self.lost:
                return False
            producer = self.producer(key)
            self.raise_if_fatal("producing")
            started = time.monotonic()
            failed: Failed = []
            offsets: Offsets = {}
            try:
                producer.begin_transaction()
                send(producer, attempt, diagnose, failed, offsets)
                for pos_key, pos_value in positions(offsets):
                    self._produce_position(producer, pos_key, pos_value)
                self._commit_transaction(producer)
            except _RecordRejected as exc:
                self._abort(key, producer)
                raise TargetError(exc.message) from None
            except TargetError:
                # transform refused a record: nothing of this transaction may become visible.
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(5)
                raise
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                self._metrics.produce_errors.labels(kind=err.name()).inc()
                rejected = [(what, perr) for what, perr in failed if perr.code() in _PERMANENT_RECORD_ERRORS]
                if rejected:
                    # The broker rejects whole record batches, so every record that shared one fails
                    # alike; the largest of them is the one to name.
                    what, perr = max(rejected, key=lambda pair: pair[0].size)
                    self._abort(key, producer)
                    raise TargetError(
                        f"target rejected record {what.coordinates} ({what.size} bytes) bound for {what.topic}: "
                        f"{perr.str()}"
                    ) from None
                self.raise_if_fatal("producing")
                if err.fatal():
                    if key is not None:
                        self._fenced_partition(key, err)
                        return False
                    self._restart_producer(err)
                if err.txn_requires_abort() or not err.retriable():
                    if not self._abort(key, producer):
                        return False
                    diagnose = True
                attempt += 1
                delay = backoff_delay(self._retry.min, self._retry.max, attempt)
                log.warning(
                    "target transaction failed; retrying the whole batch",
                    cluster=self._cluster.name,
                    error=err.str(),
                    records=count(),
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                time.sleep(delay)
                continue
            self._metrics.produce_latency.observe(time.monotonic() - started)
            return True

    def _send_raw(
        self,
        unit: RawUnit,
        cluster: str,
        producer: Producer,
        attempt: int,
        diagnose: bool,
        failed: Failed,
        offsets: Offsets,
    ) -> None:
        """Produce a fast-path unit: each source partition's records in one tight loop, the last
        one with a delivery callback where the offset map needs its offset."""
        collect = self.map_offsets
        for topic, partition, lists in unit.runs:
            where = (topic, partition)
            for n, recs in enumerate(lists):
                final = n == len(lists) - 1
                stop = len(recs) - 1 if final else len(recs)
                if diagnose:
                    for rec in islice(recs, stop):
                        collector = _FailureCollector(failed, rec, cluster)
                        self._produce_raw_one(producer, rec, topic, partition, collector, cluster)
                else:
                    self._produce_raw(producer, recs, stop, topic, partition, cluster)
                if final:
                    last = recs[-1]
                    cb: Any = _FailureCollector(failed, last, cluster) if diagnose else None
                    if collect:
                        cb = _OffsetCollector(offsets, where, cb)
                    self._produce_raw_one(producer, last, topic, partition, cb, cluster)
        if collect and unit.runs:
            self._flush(producer)

    def _produce_raw(
        self, producer: Producer, recs: list[KafkaMessage], stop: int, topic: str, partition: int, cluster: str
    ) -> None:
        """Queue ``recs[:stop]`` (consumed records) without a callback, waiting while the producer's
        queue is full; this loop is the fast path's only Python step per record."""
        produce = producer.produce
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
                producer.poll(0.05)
            except KafkaException as exc:
                self._rejected_raw(exc, recs[i], topic, cluster)

    def _produce_raw_one(
        self, producer: Producer, rec: KafkaMessage, topic: str, partition: int, cb: Any, cluster: str
    ) -> None:
        """Queue one consumed record with delivery callback ``cb`` (or None)."""
        ts = rec.timestamp()[1]
        while True:
            try:
                producer.produce(topic, rec.value(), rec.key(), partition, cb, None, ts if ts > 0 else 0, rec.headers())
                return
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                self._rejected_raw(exc, rec, topic, cluster)

    def _rejected_raw(self, exc: KafkaException, rec: KafkaMessage, topic: str, cluster: str) -> None:
        """A consumed record the client refused: name it if no retry can help, else raise ``exc`` on."""
        err = exc.args[0]
        if err.code() in _PERMANENT_RECORD_ERRORS:
            what = _describe_raw(rec, cluster)
            text = f"target cannot take record {what.coordinates} bound for {topic}: {err.str()}"
            raise _RecordRejected(text) from None
        raise exc

    def _fenced_partition(self, key: SourcePartition, err: KafkaError) -> None:
        """Group mode: another instance took ``key`` over and fenced this one; stop writing it."""
        log.warning(
            "fenced by the partition's new owner; abandoning what was in flight for it",
            cluster=self._cluster.name,
            partition=f"{key.topic}/{key.partition}",
            error=err.str(),
        )
        self._metrics.target_restarts.inc()
        self.lost.add(key)
        self._producers.pop(key, None)

    def _produce(
        self,
        producer: Producer,
        msg: Message,
        topic: str,
        partition: int,
        headers: list[tuple[str, bytes | None]] | None,
        cb: Any,
    ) -> None:
        """Queue one record, waiting while the producer's queue is full; a record the client
        refuses outright raises :class:`_RecordRejected` naming it."""
        while True:
            try:
                producer.produce(
                    topic,
                    msg.value,
                    msg.key,
                    partition=partition,
                    headers=cast(Any, headers),
                    timestamp=msg.timestamp_ms if msg.timestamp_ms > 0 else 0,
                    on_delivery=cb,
                )
                return
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() in _PERMANENT_RECORD_ERRORS:
                    raise _RecordRejected(
                        f"target cannot take record {msg.coordinates()} bound for {topic}: {err.str()}"
                    ) from None
                raise

    def _produce_position(self, producer: Producer, key: bytes, value: bytes) -> None:
        """Queue one positions record (partition 0 of the positions topic: one order for every entry)."""
        while True:
            try:
                producer.produce(self.positions_topic, value, key, partition=0)
                return
            except BufferError:
                producer.poll(0.05)

    def _flush(self, producer: Producer) -> None:
        """Wait until every record queued so far has its delivery report (and so its offset)."""
        try:
            while producer.flush(min(5.0, self._txn_timeout)) > 0:
                log.warning(
                    "target has not confirmed the batch yet; waiting for its records", cluster=self._cluster.name
                )
        except SystemError as exc:
            # confluent-kafka 2.16: a fatal error (e.g. fenced) that comes up while flush() serves
            # delivery reports leaves flush() as a SystemError whose cause is the KafkaException.
            if isinstance(exc.__cause__, KafkaException):
                raise exc.__cause__ from None
            raise

    def _commit_transaction(self, producer: Producer) -> None:
        """Commit, repeating a commit that failed retriably (the records are already queued)."""
        # A short timeout per call, repeated: the operator sees a line every few seconds while the
        # target is away, and librdkafka documents that a timed-out commit is retried by calling again.
        while True:
            try:
                producer.commit_transaction(min(5.0, self._txn_timeout))
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.retriable() and not err.txn_requires_abort() and not err.fatal():
                    log.warning(
                        "target has not confirmed the batch yet; retrying commit",
                        cluster=self._cluster.name,
                        error=err.str(),
                    )
                    continue
                raise

    def _abort(self, key: Key, producer: Producer) -> bool:
        """Abort the open transaction; False if the partition of ``key`` turned out to be lost."""
        for attempt in range(1, 1000):
            try:
                producer.abort_transaction(self._txn_timeout)
                return True
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    if key is not None:
                        self._fenced_partition(key, err)
                        return False
                    self._restart_producer(err)
                if not err.retriable():
                    return True
                time.sleep(backoff_delay(self._retry.min, self._retry.max, attempt))
        return True

    def _restart_producer(self, err: KafkaError) -> None:
        """A fatal producer error (e.g. fenced): start over from what the target durably holds.

        One fencing can follow a long target outage (the coordinator bumped the epoch of a
        timed-out transaction). Being fenced again and again means another relay is writing with
        the same transactional.id; then this one stops instead of taking turns with it.
        """
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < _FENCE_WINDOW] + [now]
        if len(self._restarts) > _FENCE_LIMIT:
            raise TargetError(
                f"target {self._cluster.name}: fenced {len(self._restarts)} times in {_FENCE_WINDOW:.0f}s; another "
                f"relay is writing with transactional.id {self._txn_id!r} (give each relay its own)"
            )
        log.warning(
            "target producer must be re-initialised; the relay re-reads positions from the target",
            cluster=self._cluster.name,
            error=err.str(),
        )
        self._metrics.target_restarts.inc()
        # The old producer is fenced or failed: whatever it still holds must not be sent, so it is
        # dropped without a flush and a new one (new epoch) takes its place.
        self._producers.pop(None, None)
        self.producer(None)
        raise TargetRestart(f"target {self._cluster.name} producer was re-initialised after: {err.str()}")


class _OffsetCollector:
    """A delivery callback that notes the offset a record got (then hands failures on, when diagnosing)."""

    __slots__ = ("offsets", "then", "where")

    def __init__(self, offsets: dict[tuple[str, int], int], where: tuple[str, int], then: Any) -> None:
        self.offsets = offsets
        self.where = where
        self.then = then

    def __call__(self, err: KafkaError | None, record: Any) -> None:
        if err is None:
            self.offsets[self.where] = record.offset()
        elif self.then is not None:
            self.then(err, record)


class Rejected(NamedTuple):
    """How an error names a record the target rejected."""

    coordinates: str
    size: int
    topic: str


Failed = list[tuple[Rejected, KafkaError]]
Offsets = dict[tuple[str, int], int]


def _describe_raw(rec: KafkaMessage, cluster: str) -> Rejected:
    key, value = rec.key(), rec.value()
    size = 64 + (len(key) if key else 0) + (len(value) if value else 0)
    where = f"{cluster}/{rec.topic()}/{rec.partition()}@{rec.offset()}"
    return Rejected(where.lstrip("/"), size, rec.topic() or "")


class _FailureCollector:
    """A delivery callback that notes which record failed, used only when diagnosing a failed batch."""

    def __init__(self, failed: Failed, rec: Message | KafkaMessage, cluster: str = "") -> None:
        self.failed = failed
        self.rec = rec
        self.cluster = cluster

    def __call__(self, err: KafkaError | None, _record: object) -> None:
        if err is not None:
            rec = self.rec
            if isinstance(rec, Message):
                self.failed.append((Rejected(rec.coordinates(), rec.size, rec.topic), err))
            else:
                self.failed.append((_describe_raw(rec, self.cluster), err))


class _RecordRejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
