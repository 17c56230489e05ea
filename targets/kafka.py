"""The Kafka target: batches committed as Kafka transactions, with resume positions in the data.

How it is exactly-once
  Each batch is one transaction. The last record of the batch in each target partition carries
  the ``kfr-pos`` header (see :mod:`relay.positions`), so a committed transaction holds its own
  resume point and an aborted one holds none. ``high_watermarks`` first initialises the
  transactional producer, which fences any older instance with the same ``transactional.id`` and
  aborts its open transaction, then reads the newest committed ``kfr-pos`` back from every target
  partition. Retries re-send a whole batch in order, so a partition is never reordered.

Threads
  The relay's thread calls ``write``; one sender thread owns the producer. ``write`` fills the
  next batch while the sender commits the previous one (double buffering): the relay keeps
  reading while a commit is on the wire, and blocks only when both buffers are full.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from relay import positions
from relay.config.model import Backoff, BatchConfig, ClusterConfig, PartitionMode
from relay.kafkautil import client_error_text
from relay.logs import librdkafka_logger
from relay.message import Message, Offsets, SourcePartition
from relay.metrics import RelayMetrics
from relay.partitioner import target_partition
from relay.tailscan import TailScanError, newest_positions
from relay.target import AckCallback, TargetError, TargetRestart

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


# (message, target topic, target partition, headers to send or None)
_Record = tuple[Message, str, int, "list[tuple[str, bytes | None]] | None"]

_TOPIC_READY_TIMEOUT = 30.0

_FENCE_WINDOW = 300.0
_FENCE_LIMIT = 3


@dataclass(frozen=True)
class Route:
    """Where one source topic goes: the target topic and how its partition is chosen."""

    source_topic: str
    target_topic: str
    partition: PartitionMode


def backoff_delay(backoff: Backoff, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [min, min(max, min * 2^attempt)]."""
    ceiling = min(backoff.max, backoff.min * (2 ** min(attempt, 30)))
    return random.uniform(backoff.min, max(backoff.min, ceiling))


class KafkaTarget:
    """Writes records to a Kafka cluster, one transaction per batch. See the module docstring.

    ``transform`` is how the LFS targets build on this one: it is called in the sender thread,
    once per record per batch (never again on a retry of that batch), just before the record is
    produced. It may block (e.g. until an upload finishes), may return a record for one of
    ``extra_topics`` (e.g. a dead-letter topic), and raises :class:`TargetError` for a record
    that must stop the relay. Records in ``extra_topics`` carry ``kfr-pos`` like any other, and
    those topics are read back on resumption too.

    ``weigh`` says how many bytes a written record counts toward ``batch.max_bytes`` (default:
    its ``size``). The LFS offload target counts an offloaded record at the size of its envelope,
    so that uploads run ahead as far as the relay's byte budget allows, not one batch.
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        routes: Sequence[Route],
        batch: BatchConfig,
        retry: Backoff,
        transactional_id: str,
        transaction_timeout: float,
        create_topics: bool,
        metrics: RelayMetrics,
        transform: Callable[[Message], Message] | None = None,
        extra_topics: Sequence[str] = (),
        fence_per_partition: bool = False,
        weigh: Callable[[Message], int] | None = None,
    ) -> None:
        self._cluster = cluster
        self._routes = {r.source_topic: r for r in routes}
        self._batch_conf = batch
        self._retry = retry
        self._txn_id = transactional_id
        self._txn_timeout = transaction_timeout
        self._create_topics = create_topics
        self._metrics = metrics
        self._transform = transform
        self._weigh = weigh
        self._extra_topics = tuple(extra_topics)
        self._target_partitions: dict[str, int] = {}
        # One transactional producer for everything (key None), or, in group mode, one per owned
        # source partition, whose transactional.id is derived from that partition: a new owner's
        # init_transactions then fences the previous owner, even a paused one that wakes up later.
        self._per_partition = fence_per_partition
        self._producers: dict[SourcePartition | None, Producer] = {}
        self._lost: set[SourcePartition] = set()
        self._client_error: KafkaError | None = None
        # Shared between the relay thread (write/flush) and the sender thread, under _cond.
        # write() takes _lock directly: entering the Condition costs two Python calls per record.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._current: list[Message] = []
        self._current_bytes = 0
        self._current_since = 0.0
        self._sending = False
        self._flush_requested = False
        self._failure: BaseException | None = None
        self._closing = False
        self._on_ack: AckCallback | None = None
        self._thread: threading.Thread | None = None
        # Next source offset per source partition as committed so far; feeds kfr-pos vectors.
        self._committed: dict[SourcePartition, int] = {}
        self._restarts: list[float] = []

    # -- setup -------------------------------------------------------------------------------
    def _error_cb(self, err: KafkaError) -> None:
        if err.code() in _PERMANENT_CLIENT_ERRORS or err.fatal():
            self._client_error = err

    def _txn_id_for(self, key: SourcePartition | None) -> str:
        return self._txn_id if key is None else f"{self._txn_id}.{key.topic}.{key.partition}"

    def _key(self, sp: SourcePartition) -> SourcePartition | None:
        return sp if self._per_partition else None

    def _producer_for(self, key: SourcePartition | None) -> Producer:
        producer = self._producers.get(key)
        if producer is None:
            producer = self._producers[key] = self._new_producer(key)
        return producer

    def _new_producer(self, key: SourcePartition | None) -> Producer:
        txn_id = self._txn_id_for(key)
        conf: dict[str, Any] = {
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "queue.buffering.max.messages": 1_000_000,
            **self._cluster.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "transactional.id": txn_id,
            "transaction.timeout.ms": int(self._txn_timeout * 1000),
            "error_cb": self._error_cb,
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
                self._raise_if_permanent_client_error(f"initialising transactions as {txn_id!r}")
                if not err.retriable() or attempt >= 5:
                    raise TargetError(
                        f"target {self._cluster.name}: could not initialise transactional producer "
                        f"{txn_id!r}: {err.str()}"
                    ) from None
                attempt += 1
                time.sleep(backoff_delay(self._retry, attempt))

    def _raise_if_permanent_client_error(self, doing: str) -> None:
        err = self._client_error
        if err is not None and err.code() in _PERMANENT_CLIENT_ERRORS:
            raise TargetError(f"target {self._cluster.name}: {doing}: {client_error_text(err.str())}")

    def _admin(self) -> AdminClient:
        conf: dict[str, Any] = {**self._cluster.client_config(), "error_cb": self._error_cb}
        conf["logger"] = librdkafka_logger()
        return AdminClient(conf)

    def _prepare_topics(self, source_partitions: Mapping[str, int]) -> None:
        """Check (and if allowed, create) every target topic, learning its partition count.

        ``source_partitions`` is each source topic's partition count. Under ``preserve`` a
        target topic with fewer partitions than its source is an error that names both.
        """
        admin = self._admin()
        try:
            md = admin.list_topics(timeout=15)
        except KafkaException as exc:
            admin.poll(0.5)  # authentication failures reach error_cb only when polled
            self._raise_if_permanent_client_error("reading metadata")
            raise TargetError(f"target {self._cluster.name} is unreachable: {exc.args[0].str()}") from None
        routes = [r for r in self._routes.values() if r.source_topic in source_partitions]
        wanted = {r.target_topic: source_partitions[r.source_topic] for r in routes}
        # Side topics (e.g. a dead-letter topic) get as many partitions as the widest source topic,
        # so a record keeps its source partition number there too.
        wanted.update({t: max(source_partitions.values(), default=1) for t in self._extra_topics})
        missing = [t for t in wanted if t not in md.topics]
        if missing and not self._create_topics:
            raise TargetError(
                f"target topic {missing[0]!r} does not exist on {self._cluster.name} and target.create_topics is false"
            )
        if missing:
            new = [NewTopic(t, wanted[t]) for t in missing]
            for name, fut in admin.create_topics(new, operation_timeout=30).items():
                try:
                    fut.result(timeout=60)
                    log.info("target topic created", topic=name, cluster=self._cluster.name)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise TargetError(
                            f"creating target topic {name!r} on {self._cluster.name}: {exc.args[0].str()}"
                        ) from None
            md = admin.list_topics(timeout=15)
        # A topic just created (by us or by whoever set it up a moment ago) is listed without
        # leaders for a short while; writing then fails, so wait for leaders before giving up.
        deadline = time.monotonic() + _TOPIC_READY_TIMEOUT
        while True:
            unready = [t for t in wanted if not _has_leaders(md.topics.get(t))]
            if not unready or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
            md = admin.list_topics(timeout=15)
        if unready:
            raise TargetError(
                f"target topic {unready[0]!r} is not available on {self._cluster.name}: "
                f"no leader for all its partitions after {_TOPIC_READY_TIMEOUT:.0f} s"
            )
        for topic in wanted:
            self._target_partitions[topic] = len(md.topics[topic].partitions)
        for route in routes:
            count = self._target_partitions[route.target_topic]
            have = source_partitions.get(route.source_topic, 0)
            if route.partition == "preserve" and count < have:
                raise TargetError(
                    f"partition: preserve needs target topic {route.target_topic!r} to have at least "
                    f"{have} partitions like source topic {route.source_topic!r}, but it has {count}"
                )
            if isinstance(route.partition, int) and not isinstance(route.partition, bool) and route.partition >= count:
                raise TargetError(
                    f"topics: partition {route.partition} does not exist in target topic "
                    f"{route.target_topic!r} ({count} partitions)"
                )

    # -- Target protocol -----------------------------------------------------------------------
    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        """Check target topics, initialise the producer (fencing older writers), read positions back."""
        wanted = set(partitions)
        topics = {sp.topic for sp in wanted}
        counts: dict[str, int] = {}
        for sp in wanted:
            counts[sp.topic] = max(counts.get(sp.topic, 0), sp.partition + 1)
        self._prepare_topics(counts)
        # Producers first: initialising them fences older writers and aborts their open
        # transactions, so what is read back below can no longer change under us.
        for key in {self._key(sp) for sp in wanted}:
            self._producer_for(key)
        self._lost -= wanted
        found: list[dict[SourcePartition, int]] = []
        scan: list[tuple[str, Sequence[int]]] = []
        for topic in topics:
            target_topic = self._routes[topic].target_topic
            count = self._target_partitions[target_topic]
            if self._per_partition:
                scan.append((target_topic, sorted(sp.partition for sp in wanted if sp.topic == topic)))
            else:
                scan.append((target_topic, range(count)))
        scan += [(t, range(self._target_partitions[t])) for t in self._extra_topics]
        for target_topic, parts in scan:
            try:
                vectors = newest_positions(self._cluster.client_config(), target_topic, parts, timeout=30.0)
            except TailScanError as exc:
                raise TargetError(f"target {self._cluster.name}: {exc}") from None
            found.extend(vectors)
        merged = {sp: off for sp, off in positions.merge(found).items() if sp in wanted}
        if self._per_partition:
            self._committed.update(merged)
        else:
            self._committed = {sp: off for sp, off in merged.items() if sp.topic in topics}
        return merged

    def release(self, partitions: Sequence[SourcePartition], flush: bool) -> None:
        """Stop writing ``partitions`` (group mode: they were revoked or lost).

        With ``flush`` (a revocation) everything in flight is committed first, so the next owner
        starts exactly after it. Without (a loss: another instance may already own them), their
        queued records are abandoned, never acknowledged, and their producers closed.
        """
        gone = set(partitions)
        if flush:
            self.flush()
        with self._cond:
            self._current = [m for m in self._current if m.source not in gone]
            self._current_bytes = sum(m.size for m in self._current)
            self._lost |= gone
        for sp in gone:
            self._committed.pop(sp, None)
            producer = self._producers.pop(sp, None) if self._per_partition else None
            if producer is not None:
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(1)

    def start(self, on_ack: AckCallback) -> None:
        """Start the sender thread."""
        self._on_ack = on_ack
        self._thread = threading.Thread(target=self._run, name="kafka-target-sender", daemon=True)
        self._thread.start()

    def write(self, message: Message) -> None:
        """Add ``message`` to the batch being filled; blocks while that batch is full.

        A full batch waits for the sender to take it (at once if it is idle, else once the
        previous batch is committed), so no batch outgrows ``batch.max_records``/``max_bytes``
        by more than one record, even when the relay's thread writes faster than the sender
        wakes up. ``message.topic`` must be the route's target topic (or, after ``transform``,
        one of ``extra_topics``).
        """
        conf = self._batch_conf
        with self._lock:
            while (
                self._failure is None
                and not self._closing
                and (len(self._current) >= conf.max_records or self._current_bytes >= conf.max_bytes)
            ):
                self._cond.wait(0.5)
            self._raise_failure()
            if not self._current:
                self._current_since = time.monotonic()
                # An idle sender sleeps until notified; without this it noticed the first record
                # of a batch only at its next 0.5 s wake-up, which was most of the relay's latency.
                self._cond.notify_all()
            self._current.append(message)
            self._current_bytes += message.size if self._weigh is None else self._weigh(message)
            if len(self._current) >= conf.max_records or self._current_bytes >= conf.max_bytes:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every written record is committed; raises what the sender raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._failure is None and (self._current or self._sending):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.5 if remaining is None else min(0.5, remaining))
            self._flush_requested = False
            self._raise_failure()
        return True

    def close(self) -> None:
        """Stop the sender and drop the producer; what was not committed is abandoned, never half-written.

        A transaction still open is aborted if the cluster answers within a few seconds; if not,
        the next instance's ``init_transactions`` aborts it.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._txn_timeout + 10)
        producers, self._producers = list(self._producers.values()), {}
        for producer in producers:
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(5)

    # -- sender thread -----------------------------------------------------------------------
    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is None:
            return
        if isinstance(failure, TargetRestart):
            # A restart is consumed once: the relay re-reads positions and carries on.
            self._failure = None
        raise failure

    def _take_batch(self) -> list[Message] | None:
        conf = self._batch_conf
        with self._cond:
            while True:
                if self._closing:
                    return None
                if self._current and self._failure is None:
                    full = len(self._current) >= conf.max_records or self._current_bytes >= conf.max_bytes
                    waited = time.monotonic() - self._current_since
                    if full or self._flush_requested or waited >= conf.linger:
                        batch = self._current
                        self._current, self._current_bytes = [], 0
                        self._sending = True
                        self._cond.notify_all()
                        return batch
                    self._cond.wait(conf.linger - waited)
                else:
                    self._cond.wait(0.5)

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                acked = self._commit(batch)
                del batch  # acknowledged records must not stay alive while the next batch is awaited
                assert self._on_ack is not None
                if acked:
                    self._on_ack(acked)
                del acked
            except TargetRestart as exc:
                with self._cond:
                    self._current, self._current_bytes = [], 0
                    self._failure = exc
            except BaseException as exc:  # handed to the relay's thread, which stops the relay
                with self._cond:
                    self._failure = exc
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def _records(
        self, unit: _Unit, early: Callable[[_Record], None] | None = None
    ) -> tuple[list[_Record], dict[SourcePartition, int], list[int]]:
        """The unit as (message, topic, partition, headers), with ``kfr-pos`` on each partition's
        last record, the next source offset per source partition once it is committed, and the
        indexes of those last records.

        ``early`` is given each record as soon as a later record of the batch lands in the same
        target partition (so it can no longer be that partition's last): the first attempt
        produces it then, while ``transform`` may still be waiting for the records after it.
        """
        out: list[_Record] = []
        last_in_partition: dict[tuple[str, int], int] = {}
        # Per-record bookkeeping keyed by plain tuples; SourcePartitions only for the batch's few.
        newest: dict[tuple[str, int], int] = {}
        transform, routes, counts = self._transform, self._routes, self._target_partitions
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
            if topic == route.target_topic:
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
        advanced = {**self._committed, **batch_next}
        for index in last_in_partition.values():
            msg, topic, partition, headers = out[index]
            route = routes[msg.source_topic]
            if self._per_partition or (route.partition == "preserve" and topic == route.target_topic):
                vector = {msg.source_partition: advanced[msg.source]}
            else:
                vector = {sp.partition: off for sp, off in advanced.items() if sp.topic == msg.source_topic}
            position = (positions.HEADER, positions.encode(msg.source_topic, vector))
            out[index] = (msg, topic, partition, [*(headers or ()), position])
        return out, batch_next, sorted(last_in_partition.values())

    def _commit(self, batch: Sequence[Message]) -> list[Message]:
        """Commit ``batch``, one transaction per producer, each retried whole until durable.

        Returns the records now durable. Only in group mode can that be fewer than the batch:
        records of partitions this instance lost (fenced by their new owner) are abandoned.
        """
        if not self._per_partition and not self._lost:
            unit = _Unit(batch)
            if self._commit_unit(None, unit):
                self._committed.update(unit.batch_next)
                return [rec[0] for rec in unit.records]
            return []
        # Group mode: one transaction per owned source partition, so the whole batch is built first.
        records, batch_next, _ = self._records(_Unit(batch))
        units: dict[SourcePartition | None, list[_Record]] = {}
        for rec in records:
            source = rec[0].source
            if source not in self._lost:
                units.setdefault(self._key(source), []).append(rec)
        acked: list[Message] = []
        for key, unit_records in units.items():
            if self._commit_unit(key, _Unit((), unit_records)):
                sources = {rec[0].source for rec in unit_records}
                self._committed.update((sp, off) for sp, off in batch_next.items() if sp in sources)
                acked.extend(rec[0] for rec in unit_records)
        return acked

    def _commit_unit(self, key: SourcePartition | None, unit: _Unit) -> bool:
        """Commit ``unit`` with the producer of ``key``; False if that partition was lost meanwhile.

        A unit not built yet is built by the first attempt, which (with a transform) produces
        while it builds (see ``_records``); a retry builds what is left without producing, then
        re-sends every record in order.
        """
        attempt = 0
        diagnose = False
        while True:
            if key is not None and key in self._lost:
                return False
            producer = self._producer_for(key)
            self._raise_if_permanent_client_error("producing")
            started = time.monotonic()
            failed: list[tuple[Message, KafkaError]] = []
            try:
                producer.begin_transaction()
                to_send: Sequence[_Record] = unit.records
                if not unit.built:
                    early = None
                    if attempt == 0 and self._transform is not None:
                        # Only a transform can keep a record waiting (for its fetch or upload);
                        # without one, producing early measured 12% slower on small records.
                        # Bound to this producer and this transaction: records produced early
                        # belong to it, and a retry re-sends them in a transaction of its own.
                        def early(rec: _Record, producer: Producer = producer) -> None:
                            self._produce(producer, *rec, None)

                    unit.records, unit.batch_next, last = self._records(unit, early)
                    unit.built = True
                    to_send = [unit.records[i] for i in last] if early is not None else unit.records
                for msg, topic, partition, headers in to_send:
                    cb = _FailureCollector(failed, msg) if diagnose else None
                    self._produce(producer, msg, topic, partition, headers, cb)
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
                rejected = [(msg, perr) for msg, perr in failed if perr.code() in _PERMANENT_RECORD_ERRORS]
                if rejected:
                    # The broker rejects whole record batches, so every record that shared one fails
                    # alike; the largest of them is the one to name.
                    msg, perr = max(rejected, key=lambda pair: pair[0].size)
                    self._abort(key, producer)
                    raise TargetError(
                        f"target rejected record {msg.coordinates()} ({msg.size} bytes) bound for {msg.topic}: "
                        f"{perr.str()}"
                    ) from None
                self._raise_if_permanent_client_error("producing")
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
                delay = backoff_delay(self._retry, attempt)
                log.warning(
                    "target transaction failed; retrying the whole batch",
                    cluster=self._cluster.name,
                    error=err.str(),
                    records=len(unit.records) if unit.built else len(unit.messages),
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                time.sleep(delay)
                continue
            self._metrics.produce_latency.observe(time.monotonic() - started)
            return True

    def _fenced_partition(self, key: SourcePartition, err: KafkaError) -> None:
        """Group mode: another instance took ``key`` over and fenced this one; stop writing it."""
        log.warning(
            "fenced by the partition's new owner; abandoning what was in flight for it",
            cluster=self._cluster.name,
            partition=f"{key.topic}/{key.partition}",
            error=err.str(),
        )
        self._metrics.target_restarts.inc()
        self._lost.add(key)
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

    def _abort(self, key: SourcePartition | None, producer: Producer) -> bool:
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
                time.sleep(backoff_delay(self._retry, attempt))
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
        self._producer_for(None)
        raise TargetRestart(f"target {self._cluster.name} producer was re-initialised after: {err.str()}")


class _Unit:
    """The records of one transaction: ``messages`` as written, or ``records`` already built.

    ``transformed`` keeps what ``transform`` returned, in order, so that however an attempt ends,
    no record is ever transformed twice (a hydrated record's fetch is consumed by its transform).
    """

    __slots__ = ("batch_next", "built", "messages", "records", "transformed")

    def __init__(self, messages: Sequence[Message], records: Sequence[_Record] | None = None) -> None:
        self.messages = messages
        self.records: Sequence[_Record] = records or []
        self.built = records is not None
        self.batch_next: dict[SourcePartition, int] = {}
        self.transformed: list[Message] = []


def _has_leaders(tmd: Any) -> bool:
    """Whether topic metadata ``tmd`` is error-free and every partition has a leader."""
    if tmd is None or tmd.error is not None or not tmd.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in tmd.partitions.values())


class _FailureCollector:
    """A delivery callback that notes which record failed, used only when diagnosing a failed batch."""

    def __init__(self, failed: list[tuple[Message, KafkaError]], msg: Message) -> None:
        self.failed = failed
        self.msg = msg

    def __call__(self, err: KafkaError | None, _record: object) -> None:
        if err is not None:
            self.failed.append((self.msg, err))


class _RecordRejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
