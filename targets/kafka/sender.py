"""The transactional sender: producers, one transaction per plan, retries, fencing.

One transactional producer writes everything, or, in group mode, one per owned source partition
whose ``transactional.id`` is derived from that partition: a new owner's ``init_transactions``
then fences the previous owner, even a paused one that wakes up later.

The sender runs on a thread of its own (:meth:`TransactionalSender.run`): it pulls batches from the
accumulator, has the target make plans of them, executes each plan as a transaction retried whole
until durable, and reports the outcome back to the accumulator. Only :meth:`release` and
:meth:`producer` (at start-up and on an assignment) are called from the relay's thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from relay.backoff import backoff_delay
from relay.errors import passing
from relay.kafkautil import client_error_text, retriable
from relay.logs import librdkafka_logger
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.settings import ClusterConfig
from relay.target import TargetError, TargetRestart
from targets.kafka import positions
from targets.kafka.plan import Committed, Placed, Plan
from targets.kafka.positions import Entry
from targets.kafka.produce import PERMANENT_RECORD_ERRORS, Production, RecordRejected
from targets.kafka.provenance import Stamp
from targets.kafka.settings import KafkaTargetConfig

log = structlog.get_logger("kafka_lfs_relay.target")

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


def producer_config(cluster: ClusterConfig, transactional_id: str, transaction_timeout: float) -> dict[str, object]:
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


class Batches(Protocol):
    """What the sender pulls work from and reports to: the Kafka target's accumulator.

    See :meth:`TransactionalSender.run`.
    """

    def take_plans(self) -> list[Plan] | None:
        """The plans of the next batch once it is due; None when the target closes."""
        ...

    def committed(self, plan: Plan, outcome: Committed) -> None:
        """``plan`` committed, writing ``outcome.written`` and making ``outcome.entries`` true."""
        ...

    def lost(self, plan: Plan) -> None:
        """``plan`` was abandoned: another instance owns its partition now (group mode)."""
        ...

    def sent(self) -> None:
        """Every plan of the batch is committed or lost."""
        ...

    def fail(self, failure: BaseException) -> None:
        """The sender cannot go on (or its producer restarted): the batch is not committed."""
        ...


class TransactionalSender:
    """Commits plans as Kafka transactions, each retried whole until durable."""

    def __init__(
        self,
        config: KafkaTargetConfig,
        transactional_id: str,
        name: str,
        positions_topic: str,
        metrics: RelayMetrics,
        per_partition: bool,
    ) -> None:
        self._cluster: ClusterConfig = config.cluster
        self._name = name
        self.positions_topic = positions_topic
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
        self.stamps: Mapping[str, Stamp] | None = None
        """Provenance: the header added to records read from each source cluster (None: none added)."""

    # -- the thread --------------------------------------------------------------------------------
    def run(self, batches: Batches) -> None:
        """Take each batch's plans, execute them in order and report each outcome, until ``batches`` closes.

        Any exception (a failure, or a restart of the producer) is handed to ``batches``, which hands it
        to the relay's thread; the sender then waits for the next batch.
        """
        while True:
            try:
                plans = batches.take_plans()
                if plans is None:
                    return
                for plan in plans:
                    outcome = self.execute(plan)
                    if outcome is None:
                        batches.lost(plan)
                    else:
                        batches.committed(plan, outcome)
            except BaseException as exc:  # handed to the relay's thread, which stops or restarts
                batches.fail(exc)
            else:
                batches.sent()

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

    @property
    def transactional_id(self) -> str:
        """The transactional id this relay writes as (group mode: the stem of each partition's); its entries name it."""
        return self._txn_id

    def refresh_metadata(self, topics: Sequence[str]) -> None:
        """Have every producer fetch ``topics``' metadata now: partitions just added are written at once."""
        for producer in list(self._producers.values()):
            for topic in topics:
                with contextlib.suppress(KafkaException):
                    producer.list_topics(topic, timeout=10)

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
    def execute(self, plan: Plan) -> Committed | None:
        """Commit ``plan`` with its producer, retried whole until durable; what it wrote and made true, or
        None if its partition was lost meanwhile (group mode).

        A retry after a failed attempt diagnoses: every record carries a callback that notes a failure, so
        that a record the broker refuses for good is named and stops the relay instead of retrying forever.
        """
        if plan.empty:
            return Committed({}, {})
        key = plan.key
        attempt = 0
        diagnose = False
        while True:
            if key is not None and key in self.lost:
                return None
            producer = self.producer(key)
            self.raise_if_fatal("producing")
            started = time.monotonic()
            production = Production(producer, diagnose, self.stamps)
            try:
                producer.begin_transaction()
                written = self._send(plan, production)
                self._commit_transaction(producer)
            except RecordRejected as exc:
                self._abort(key, producer)
                raise TargetError(exc.message) from None
            except TargetError:
                # A transform refused a record: nothing of this transaction may become visible.
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(5)
                raise
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not self._recover(key, producer, err, production):
                    return None
                if err.txn_requires_abort() or not err.retriable():
                    diagnose = True
                attempt += 1
                delay = backoff_delay(self._retry.min, self._retry.max, attempt)
                log.warning(
                    "target transaction failed; retrying the whole batch",
                    cluster=self._cluster.name,
                    error=err.str(),
                    records=plan.records,
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                time.sleep(delay)
                continue
            # Outside the retries: the transaction is durable, whatever happens from here on.
            outcome = Committed(written, self._settled(plan, production))
            self._metrics.produce_latency.observe(time.monotonic() - started)
            return outcome

    def _send(self, plan: Plan, production: Production) -> dict[SourcePartition, Entry]:
        """Produce the plan's records and its positions records (their map points come later: waiting here
        for the records' offsets would cost the transaction a round trip)."""
        mirrors = set(plan.mirrors.values())
        for chunk in plan.chunks:
            production.consumed(chunk, (chunk.topic, chunk.partition) in mirrors)
        if plan.made is not None:
            # The last record of each mirrored target partition carries the offset callback; which
            # one is last is known only once the next arrives (or none does), so one is held back.
            held: dict[tuple[str, int], Placed] = {}
            for placed in plan.made:
                where = (placed.topic, placed.partition)
                if where not in mirrors:
                    production.made(placed, False)
                    continue
                before = held.get(where)
                held[where] = placed
                if before is not None:
                    production.made(before, False)
            for placed in held.values():
                production.made(placed, True)
        if production.diagnose:
            self._flush(production.producer)  # a record refused for good is named before the commit fails
        try:
            written = plan.written()
        except positions.PositionError as exc:  # a position no relay could read back: never written
            raise TargetError(f"target {self._cluster.name}: {exc}; refusing to commit") from None
        for pos_key, pos_value in positions.records(self._name, written, self._txn_id):
            self._produce_position(production.producer, pos_key, pos_value)
        return written

    def _settled(self, plan: Plan, production: Production) -> dict[SourcePartition, Entry]:
        """After ``plan`` committed: its entries with the map points of its records."""
        if production.wants_offsets:
            self._flush(production.producer)  # serves the delivery reports that carry the offsets
        entries = plan.entries(production.offsets)
        for sp, entry in entries.items():
            if positions.map_restarted(plan.current.get(sp), entry):
                log.warning(
                    "target partition offsets went back under the relay (target topic recreated?); a new offset "
                    "map starts, and groups committed before it are not translated",
                    partition=f"{sp.topic}/{sp.partition}",
                    since=entry.since,
                )
        return entries

    def _recover(self, key: Key, producer: Producer, err: KafkaError, production: Production) -> bool:
        """After a failed attempt: stop on a record refused for good, restart or give up a fenced producer,
        abort the transaction; False if the partition of ``key`` turned out to be lost."""
        self._metrics.produce_errors.labels(kind=err.name()).inc()
        rejected = [(what, perr) for what, perr in production.failed if perr.code() in PERMANENT_RECORD_ERRORS]
        if rejected:
            # The broker rejects whole record batches, so every record that shared one fails alike;
            # the largest of them is the one to name.
            what, perr = max(rejected, key=lambda pair: pair[0].size)
            self._abort(key, producer)
            raise TargetError(
                f"target rejected record {what.coordinates} ({what.size} bytes) bound for {what.topic}: {perr.str()}"
            )
        self.raise_if_fatal("producing")
        if err.fatal():
            if key is not None:
                self._fenced_partition(key, err)
                return False
            self._restart_producer(err)
        if err.txn_requires_abort() or not err.retriable():
            return self._abort(key, producer)
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
        self.lost.add(key)
        self._producers.pop(key, None)

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
