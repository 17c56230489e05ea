"""Source clusters: health checks in the background, and a reader on the active one.

Threads: the health-check thread only reads cluster metadata and end offsets and publishes a
decision; the consumer belongs to the relay's thread alone (librdkafka consumers are not safe to
close from another thread), which swaps readers between polls when a switch is pending.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from relay.backoff import backoff_delay
from relay.errors import RelayError, passing
from relay.failover import Decision, Health, RelayView, Switchboard
from relay.kafkautil import client_error_text, retriable
from relay.logs import librdkafka_logger
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.settings import ClusterConfig, GroupConfig, SourcePoolConfig

log = structlog.get_logger("kafka_lfs_relay.source")

_AUTH_ERRORS = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


_LATEST: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]


class SourceError(RelayError):
    """A source cannot be read as configured; the message names the cluster and the topic."""

    code = "source"


@dataclass(frozen=True)
class Fingerprint:
    """What the relay last read from a partition, to check that another source holds the same record there.

    ``source`` (where it was read) is for messages only; two fingerprints are equal when offset and digest are.
    """

    offset: int
    digest: int
    source: str = field(default="", compare=False)


def fingerprint(offset: int, key: bytes | None, value: bytes | None, source: str = "") -> Fingerprint:
    """A cheap identity of one record: its offset and a CRC of key and value.

    Timestamps are left out on purpose: clusters fed by dual-writing producers hold the same
    records with create times a few milliseconds apart.
    """
    return Fingerprint(offset, zlib.crc32(value or b"", zlib.crc32(key or b"")), source)


OFFSET_ERRORS: Final = frozenset(
    {KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._LOG_TRUNCATION}
)
"""Error events of a consumer whose position is outside the partition's log. Source consumers run
with ``auto.offset.reset: error``: librdkafka then stops fetching the partition and reports
``_AUTO_OFFSET_RESET`` (seen against Kafka 4.1) instead of jumping to either end of the log; a
log truncation it detects (KIP-320: the leader's log ends below the position, after an unclean
leader election) comes the same way, saying so in its text (see :func:`truncation_end`)."""

_TRUNCATION_END = re.compile(r"broker end offset is (-?\d+)")


def truncation_end(err: KafkaError) -> int | None:
    """Where the partition's log ends now if ``err`` reports a log truncation, else None (-1: not said).

    librdkafka reports it as ``_LOG_TRUNCATION``, or, under ``auto.offset.reset: error``, as
    ``_AUTO_OFFSET_RESET`` whose text carries the truncation's reason and end offset: there is no
    other signal.
    """
    text = err.str()
    if err.code() != KafkaError._LOG_TRUNCATION and "log truncation" not in text.lower():
        return None
    found = _TRUNCATION_END.search(text)
    return int(found.group(1)) if found is not None and int(found.group(1)) >= 0 else -1


def probe_config(cluster: ClusterConfig, timeout: float) -> dict[str, Any]:
    """The librdkafka properties of a :class:`ClusterProbe`'s AdminClient, without its callbacks."""
    return {**cluster.client_config(), "socket.timeout.ms": max(1000, int(timeout * 1000))}


class ClusterProbe:
    """Health checks of one cluster through an AdminClient that lives as long as the pool."""

    def __init__(self, cluster: ClusterConfig, timeout: float) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self.auth_error: str | None = None
        conf = {**probe_config(cluster, timeout), "error_cb": self._error_cb, "logger": librdkafka_logger()}
        self.admin = AdminClient(conf)

    def _error_cb(self, err: KafkaError) -> None:
        if err.code() in _AUTH_ERRORS:
            self.auth_error = client_error_text(err.str())

    def partitions(self, topics: Iterable[str], optional: Collection[str] = ()) -> dict[str, int]:
        """Partition count of each topic; raises SourceError naming a missing topic (one of ``optional``,
        selected by a pattern, is left out instead: it was deleted)."""
        md = self.admin.list_topics(timeout=self.timeout)
        counts: dict[str, int] = {}
        for topic in topics:
            tmd = md.topics.get(topic)
            if (tmd is None or tmd.error is not None or not tmd.partitions) and topic in optional:
                continue
            if tmd is None or tmd.error is not None or not tmd.partitions:
                reason = tmd.error.str() if tmd is not None and tmd.error is not None else "it does not exist"
                error = SourceError(f"source {self.cluster.name}: topic {topic!r} cannot be read: {reason}")
                # A leader being elected passes; a topic that does not exist is a mistake to report.
                raise passing(error) if tmd is not None and tmd.error is not None and retriable(tmd.error) else error
            counts[topic] = len(tmd.partitions)
        return counts

    def topic_ids(self, topics: Sequence[str]) -> dict[str, str]:
        """The Kafka topic id of each of ``topics`` (new when a topic is deleted and created again)."""
        if not topics:
            return {}
        futures = self.admin.describe_topics(TopicCollection(list(topics)), request_timeout=self.timeout * 5)
        return {topic: str(fut.result(timeout=self.timeout * 10).topic_id) for topic, fut in futures.items()}

    def check(self, topics: Sequence[str], optional: Collection[str] = ()) -> Health:
        """Metadata and committed end offsets of every partition, within the request timeout."""
        now = time.monotonic()
        try:
            counts = self.partitions(topics, optional)
            request = {TopicPartition(t, p): _LATEST for t, n in counts.items() for p in range(n)}
            futures = self.admin.list_offsets(
                request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self.timeout
            )
            ends = {
                SourcePartition(tp.topic, tp.partition): fut.result(timeout=self.timeout).offset
                for tp, fut in futures.items()
            }
            return Health(self.cluster.name, True, now, ends)
        except SourceError as exc:
            return Health(self.cluster.name, False, now, error=str(exc), passing=exc.transient)
        except Exception as exc:  # every client failure is "unhealthy", with librdkafka's reason
            # Authentication failures reach error_cb only when the client is polled; without this
            # the reason would read "broker transport failure" instead of naming the real cause.
            self.admin.poll(0.5)
            reason = self.auth_error or (exc.args[0].str() if isinstance(exc, KafkaException) else str(exc))
            passing = self.auth_error is None and isinstance(exc, KafkaException) and retriable(exc.args[0])
            return Health(self.cluster.name, False, now, error=reason or type(exc).__name__, passing=passing)


class SourcePool:
    """One or more clusters holding the same topics; picks the one to read and says when to switch."""

    def __init__(
        self,
        sources: Sequence[ClusterConfig],
        topics: Sequence[str],
        config: SourcePoolConfig,
        metrics: RelayMetrics,
        history: int = 8,
    ) -> None:
        self.sources = {s.name: s for s in sources}
        self.order = [s.name for s in sources]
        self.topics = list(topics)
        # Topics selected by a pattern: one the source lacks was deleted there, which is no failure.
        self.optional: frozenset[str] = frozenset()
        self.config = config
        self.metrics = metrics
        self._probes = {s.name: ClusterProbe(s, config.request_timeout) for s in sources}
        self.board = Switchboard(self.order, config, history)
        self.board.start_on(self.order[0], time.monotonic())
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # The topic ids each source gave last (the target asks at every resume): a topic that has
        # another id now was deleted and created again since.
        self._ids: dict[tuple[str, str], str] = {}

    @property
    def active(self) -> str:
        """The source the relay reads from."""
        return self.board.active

    # -- choosing ------------------------------------------------------------------------------
    def choose_initial(self) -> str:
        """Check every source once and pick where to start; raises SourceError if none is usable."""
        checks = {name: probe.check(self.topics, self.optional) for name, probe in self._probes.items()}
        for health in checks.values():
            self._record(health)
        usable = [name for name in self.order if checks[name].ok]
        if not usable:
            reasons = "; ".join(f"{n}: {checks[n].error}" for n in self.order)
            error = SourceError(f"no source cluster is usable ({reasons})")
            # Waited for at start-up (relay.startup) when every source is away, not misconfigured.
            raise passing(error) if all(c.passing for c in checks.values()) else error
        # The first usable source in config order, so an operator knows where a relay starts.
        self.board.start_on(random.choice(usable) if self.config.random_initial else usable[0], time.monotonic())
        self._publish_active()
        log.info("source selected", source=self.active, mode="failover" if len(self.order) > 1 else "single")
        return self.active

    def partitions(self, topics: Iterable[str] | None = None) -> dict[str, int]:
        """Partition count of each of ``topics`` (default: the relay's topics) on the active source."""
        return self._probes[self.active].partitions(self.topics if topics is None else topics, self.optional)

    def topic_ids(self, topics: Sequence[str]) -> tuple[str, dict[str, str]]:
        """The active source's name, and the Kafka topic id of each of ``topics`` there.

        Raises :class:`SourceError` if the source cannot say.
        """
        name = self.active
        try:
            ids = self._probes[name].topic_ids(topics)
            self._ids.update({(name, topic): tid for topic, tid in ids.items()})
            return name, ids
        except KafkaException as exc:
            raise SourceError(f"source {name}: describing topics {', '.join(topics)}: {exc.args[0].str()}") from None
        except Exception as exc:  # no answer in time (TimeoutError), or a bare KafkaError from a future
            why = str(exc) or type(exc).__name__
            raise SourceError(f"source {name}: describing topics {', '.join(topics)}: {why}") from None

    def recreated(self, topic: str) -> tuple[str, str] | None:
        """(the id given last, the id now) if ``topic`` has another id on the active source than the one
        :meth:`topic_ids` gave last; None if it has not, if none was given, or if the source cannot say."""
        name = self.active
        old = self._ids.get((name, topic))
        if old is None:
            return None
        try:
            new = self._probes[name].topic_ids([topic])[topic]
        except Exception:  # no answer: the caller treats the partition as it would without ids
            return None
        return (old, new) if new != old else None

    def end_offsets(self) -> dict[SourcePartition, int]:
        """Committed end offsets of the active source now; raises SourceError if it cannot answer."""
        health = self._probes[self.active].check(self.topics, self.optional)
        if not health.ok:
            error = SourceError(f"source {self.active}: cannot read end offsets: {health.error}")
            raise passing(error) if health.passing else error
        return dict(health.end_offsets)

    def retopic(self, added: Iterable[str], removed: Collection[str]) -> None:
        """Topics selected by a pattern appeared (``added``) or went away (``removed``) (the relay's thread).

        The health checks read the lists on their own thread: each is replaced, never changed.
        """
        new = list(added)
        # Optional before listed, and unlisted before not optional: a check never sees a required topic it may lack.
        self.optional = self.optional | frozenset(new)
        self.topics = [t for t in self.topics if t not in removed] + [t for t in new if t not in self.topics]
        self.optional = self.optional - frozenset(removed)

    def latest(self, name: str) -> Health | None:
        """The newest health check of source ``name``."""
        return self.board.latest(name)

    # -- background checks -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the health-check thread."""
        self._thread = threading.Thread(target=self._run, name="source-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the health-check thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.request_timeout * 3 + 5)

    def check_now(self) -> None:
        """Ask for a health check before the interval is up (the reader saw its brokers go down)."""
        self._wake.set()

    def _record(self, health: Health) -> Health | None:
        previous = self.board.record(health)
        self.metrics.source_healthy.labels(source=health.source).set(1 if health.ok else 0)
        return previous

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            for name in self.order:
                if self._stop.is_set():
                    return
                health = self._probes[name].check(self.topics, self.optional)
                previous = self._record(health)
                if previous is not None and previous.ok != health.ok:
                    log.warning("source health changed", source=name, healthy=health.ok, error=health.error)
            # The relay's thread takes (and so decides) switches itself; this is for the log and the backoff.
            decision = self.board.assess(time.monotonic())
            if decision.reason == "no_healthy_source":
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.error(
                        "active source is down and no other is healthy; waiting",
                        source=self.active,
                        detail=decision.detail,
                    )
            else:
                failures = 0
            delay = self.config.healthcheck_interval
            if failures:
                # Back off while nothing is healthy, so a dead fleet is not hammered every interval.
                delay = max(delay, backoff_delay(self.config.backoff.min, self.config.backoff.max, failures))
            self._wake.wait(delay)
            self._wake.clear()

    def take_switch(self) -> Decision | None:
        """A switch to carry out now, decided at this moment from the active source (relay's thread)."""
        return self.board.take(time.monotonic())

    def publish(self, view: RelayView) -> None:
        """The relay's positions and the partitions it waits on, for the failover decision (relay's thread)."""
        self.board.publish(view)

    def switched(self, decision: Decision) -> None:
        """Record that the relay now reads from ``decision.to``."""
        assert decision.to is not None
        previous = self.board.switched(decision.to, time.monotonic())
        self.metrics.source_switches.labels(from_source=previous, to_source=decision.to, reason=decision.reason).inc()
        self._publish_active()

    def _publish_active(self) -> None:
        for name in self.order:
            self.metrics.source_active.labels(source=name).set(1 if name == self.active else 0)

    def reader(self, name: str, queue_bytes: int, group: GroupConfig | None = None) -> SourceReader:
        """A new reader on source ``name`` (a member of ``group`` in group mode)."""
        return SourceReader(self.sources[name], queue_bytes, self.check_now, group)


_MAX_QUEUE_KBYTES = 2_097_151
"""librdkafka's upper bound for ``queued.max.messages.kbytes`` (2 GiB): a larger ``max_in_flight`` made the
consumer refuse its own configuration."""


def reader_config(cluster: ClusterConfig, queue_bytes: int, group: GroupConfig | None = None) -> dict[str, Any]:
    """The librdkafka properties of a :class:`SourceReader`'s consumer, without its callbacks."""
    membership: dict[str, Any] = {"group.id": f"kafka-lfs-relay-{uuid.uuid4().hex[:8]}"}
    if group is not None:
        membership = {
            "group.id": group.id,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": int(group.session_timeout * 1000),
            "heartbeat.interval.ms": max(100, int(group.session_timeout * 1000) // 4),
        }
    return {
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        **cluster.client_config(),
        **membership,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        # Never jump: a position outside the log becomes an error event the relay handles
        # (a gap, a source that trails); see OFFSET_ERRORS and relay.settings.SOURCE_MANAGED_PROPERTIES.
        "auto.offset.reset": "error",
        "queued.max.messages.kbytes": min(_MAX_QUEUE_KBYTES, max(1024, queue_bytes // 1024)),
        # Once the prefetch queue is over its limit, librdkafka waits this long before the next
        # fetch (default 1 s). With records as large as the queue (64 MiB records offloaded
        # to S3) that paced the relay to one record per second.
        "fetch.queue.backoff.ms": 10,
    }


class SourceReader:
    """A consumer on one source cluster: assigned partitions at exact offsets, or (group mode) a member of the group.

    Outside group mode its ``group.id`` is a random one that nothing is ever committed to.
    """

    def __init__(
        self, cluster: ClusterConfig, queue_bytes: int, on_down: Callable[[], None], group: GroupConfig | None = None
    ) -> None:
        self.cluster = cluster
        self.fatal: str | None = None
        self._on_down = on_down
        conf = {**reader_config(cluster, queue_bytes, group), "error_cb": self._error_cb, "logger": librdkafka_logger()}
        self.consumer = Consumer(conf)
        self.assigned: set[SourcePartition] = set()

    def _error_cb(self, err: KafkaError) -> None:
        if err.code() in _AUTH_ERRORS:
            self.fatal = f"source {self.cluster.name}: {client_error_text(err.str())}"
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._on_down()

    def assign(self, positions: Mapping[SourcePartition, int]) -> None:
        """Add ``positions`` to the assignment (offset -1: the partition's beginning)."""
        tps = [
            TopicPartition(sp.topic, sp.partition, off if off >= 0 else OFFSET_BEGINNING)
            for sp, off in positions.items()
        ]
        self.consumer.incremental_assign(tps)
        self.assigned.update(positions)

    def unassign(self, partitions: Collection[SourcePartition]) -> None:
        """Stop reading ``partitions`` (their topic was deleted on the source)."""
        tps = [TopicPartition(sp.topic, sp.partition) for sp in partitions if sp in self.assigned]
        if tps:
            self.consumer.incremental_unassign(tps)
        self.assigned -= set(partitions)

    def subscribe(self, topics: list[str], **callbacks: Callable[[Consumer, list[TopicPartition]], None]) -> None:
        """Join the group for ``topics``; the callbacks assign and unassign (group mode)."""
        self.consumer.subscribe(topics, **callbacks)

    def consume(self, max_records: int, timeout: float) -> list[KafkaMessage]:
        """Up to ``max_records`` next records (and partition-EOF events) from the assigned partitions.

        Returns as soon as anything is there; waits up to ``timeout`` only while nothing is.
        """
        # consume(n, timeout) waits until it has n records or the timeout passed, so below
        # n records per timeout every record would wait the full timeout: 200 ms of latency
        # at 5k records/s. Take what is fetched already; if nothing is, wait for the first.
        batch = self.consumer.consume(max_records, 0)
        if batch:
            return batch
        first = self.consumer.poll(timeout)
        if first is None:
            return []
        return [first, *self.consumer.consume(max_records - 1, 0)]

    def reposition(self, positions: Mapping[SourcePartition, int]) -> None:
        """Fetch ``positions`` from these offsets (-1: the beginning), assigned or not.

        After an offset error librdkafka stops fetching the partition and refuses to seek it
        (``_STATE``), so an assigned partition is unassigned and assigned again (also allowed
        outside a rebalance callback in group mode).
        """
        if not positions:
            return
        current = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        again = [TopicPartition(sp.topic, sp.partition) for sp in positions if (sp.topic, sp.partition) in current]
        if again:
            self.consumer.incremental_unassign(again)
        self.assign(positions)

    def watermarks(self, sp: SourcePartition, timeout: float) -> tuple[int, int]:
        """(log start, high watermark) of ``sp`` asked from the broker now; raises KafkaException."""
        low, high = self.consumer.get_watermark_offsets(TopicPartition(sp.topic, sp.partition), timeout, False)
        return low, high

    def close(self) -> None:
        """Close the consumer; in group mode this leaves the group (its partitions are revoked first)."""
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()


@dataclass(frozen=True)
class Verified:
    """What a :class:`Verification` found at one fingerprint's offset.

    ``match``: the same record; ``mismatch``: another record (``detail`` says where); ``gone``: the
    offset is below this source's log start, nothing left to compare; ``pending``: not found in
    time, or not on this source yet: try again later.
    """

    kind: Literal["match", "mismatch", "gone", "pending"]
    detail: str = ""


class Verification:
    """Reads, on a short-lived consumer of its own and in a thread of its own, the record at each
    fingerprint's offset on one source, so the relay's reader keeps flowing meanwhile.

    The relay's thread polls :meth:`done` and then reads :attr:`outcomes`.
    """

    def __init__(self, cluster: ClusterConfig, fingerprints: Mapping[SourcePartition, Fingerprint], timeout: float):
        self.source = cluster.name
        self.fingerprints = dict(fingerprints)
        self.outcomes: dict[SourcePartition, Verified] = {}
        self._cluster = cluster
        self._timeout = timeout
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"verify-{cluster.name}", daemon=True)
        self._thread.start()

    def done(self) -> bool:
        """Whether :attr:`outcomes` is complete."""
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop early (a switch made the outcome moot); the thread closes its consumer itself."""
        self._cancel.set()

    def _run(self) -> None:
        todo = dict(self.fingerprints)
        outcomes: dict[SourcePartition, Verified] = {}
        consumer: Consumer | None = None
        why = "not found in time"
        try:
            consumer = Consumer(
                {
                    **self._cluster.client_config(),
                    "group.id": f"kafka-lfs-relay-verify-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "error",
                    "queued.max.messages.kbytes": 16 * 1024,
                    "logger": librdkafka_logger(),
                }
            )
            consumer.assign([TopicPartition(sp.topic, sp.partition, fp.offset) for sp, fp in todo.items()])
            deadline = time.monotonic() + self._timeout
            while todo and not self._cancel.is_set() and time.monotonic() < deadline:
                for msg in consumer.consume(len(todo), 0.5):
                    sp = SourcePartition(msg.topic() or "", msg.partition() or 0)
                    expected = todo.pop(sp, None)
                    if expected is None:
                        continue
                    outcomes[sp] = self._compare(consumer, sp, expected, msg)
        except Exception as exc:  # the source went away meanwhile: what is left is tried again later
            why = client_error_text(exc.args[0].str()) if isinstance(exc, KafkaException) else str(exc)
        finally:
            for sp in todo:
                outcomes.setdefault(sp, Verified("pending", why))
            self.outcomes = outcomes
            if consumer is not None:
                with contextlib.suppress(KafkaException, RuntimeError):
                    consumer.close()
            self._done.set()

    def _compare(self, consumer: Consumer, sp: SourcePartition, expected: Fingerprint, msg: KafkaMessage) -> Verified:
        where = f"{sp.topic}/{sp.partition}@{expected.offset}"
        err = msg.error()
        if err is not None:
            if err.code() not in OFFSET_ERRORS:
                return Verified("pending", client_error_text(err.str()))
            low, _ = consumer.get_watermark_offsets(TopicPartition(sp.topic, sp.partition), self._timeout, False)
            if expected.offset < low:
                return Verified("gone", f"{where}: {self.source} starts that log at offset {low}")
            return Verified("pending", f"{where} is not on {self.source} yet")
        got = fingerprint(msg.offset() or 0, msg.key(), msg.value())
        if got == expected:
            return Verified("match")
        if got.offset != expected.offset:
            where += f" (found offset {got.offset}: the record there was removed)"
        return Verified("mismatch", where)
