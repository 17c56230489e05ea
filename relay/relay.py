"""The relay: read from the active source, filter, write to the target, resume exactly.

One thread runs :meth:`Relay.run`: it owns the source consumer, applies the filters and hands
records to the target. The target acknowledges from its own thread (``_on_ack``), which only
releases budget and counts. The health checker runs in the pool's thread and only *proposes*
switches; this thread carries them out between two polls, so a consumer is never used by two
threads. Which partitions are read, and how that changes, is an :class:`~relay.ownership.Ownership`:
all of them, or a consumer group's share.

Positions: ``_next[sp]`` is the next source offset to read, advanced as records are read (not as
they are acknowledged). It is used only to position a new consumer after a failover. What the
relay resumes from after a crash is always what the target reports, never this in-memory state.

Reads never jump: a position outside the active source's log (a gap, or a source that trails the
relay) makes its partition wait in the :class:`~relay.gate.SourceGate` instead of moving it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

import structlog
from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from relay.budget import ByteBudget
from relay.failover import Decision
from relay.gate import SourceGate
from relay.kafkautil import headers_of
from relay.message import Message, RawBatch, SourcePartition, raw_size, record_size
from relay.metrics import RelayMetrics
from relay.ownership import AllPartitions, GroupShare, Ownership
from relay.settings import RelaySettings
from relay.sourcepool import (
    OFFSET_ERRORS,
    Fingerprint,
    SourceError,
    SourcePool,
    SourceReader,
    fingerprint,
)
from relay.startup import StartUp
from relay.target import BatchTarget, PartitionOwner, ProgressSink, Target, TargetRestart

log = structlog.get_logger("kafka_lfs_relay.relay")

# A filter chain returns None to keep a record, or the name of the filter that dropped it.
FilterFn = Callable[[Message], "str | None"]

_POLL_RECORDS = 2000
_POLL_TIMEOUT = 0.2
_DRAIN_TIMEOUT = 30.0
# The client's method descriptors, for map() and groupby() on the fast path: called from C, no Python frame.
_ERROR = KafkaMessage.error
_TOPIC = KafkaMessage.topic
_PARTITION = KafkaMessage.partition


@dataclass(frozen=True)
class Progress:
    """What ``stop_at_end`` is waiting for: records left, and partitions left."""

    remaining: int
    partitions_left: int


class Relay:
    """Moves records from a :class:`SourcePool` through filters into a :class:`Target`."""

    def __init__(
        self,
        pool: SourcePool,
        target: Target,
        settings: RelaySettings,
        metrics: RelayMetrics,
        filters: FilterFn | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.pool = pool
        self.target = target
        self.settings = settings
        self.routes = {t.source: t for t in settings.topics}
        self.metrics = metrics
        self.stop_at_end = settings.stop_at_end
        self.filters = filters
        self.on_progress = on_progress
        self.budget = ByteBudget(settings.max_in_flight, metrics.in_flight_bytes.set)
        self.stopping = threading.Event()
        # /healthz and /readyz (relay.health): the loop, the acks and the ownership report to it.
        self.health = metrics.health
        self.health.watch_source(lambda: (pool.active, pool.latest(pool.active)))
        self._queue_bytes = settings.queue_bytes
        self._next: dict[SourcePartition, int] = {}
        self._fingerprints: dict[SourcePartition, Fingerprint] = {}
        self._ends: dict[SourcePartition, int] = {}
        self._done: set[SourcePartition] = set()
        self._reader: SourceReader | None = None
        self._progress = target if isinstance(target, ProgressSink) else None
        self._gate = SourceGate(
            pool, self.routes, self._next, self._fingerprints, lambda: self._reader, self._skipped, metrics, self.health
        )
        # The passthrough fast path (decided in run()): records go to the target as consumed.
        self.passthrough = False
        self._batch_target: BatchTarget | None = None
        self._only_topic = next(iter(self.routes)) if len(self.routes) == 1 else None
        self.ownership: Ownership
        if settings.group is None:
            self.ownership = AllPartitions(pool, self)
        else:
            if not isinstance(target, PartitionOwner):
                raise TypeError("group mode needs a target that implements relay.target.PartitionOwner")
            self.ownership = GroupShare(settings.group, list(self.routes), target, self, self.budget, metrics)
            self.health.in_group(settings.group.id)

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the relay to drain and return (safe from a signal handler or another thread)."""
        self.stopping.set()

    def run(self) -> None:
        """Relay until stopped, or until the end offsets seen at start when ``stop_at_end``.

        Raises :class:`RelayError` on anything unrecoverable; what was acknowledged stays
        acknowledged and nothing else is marked as done.
        """
        self.passthrough = self._choose_path()
        # Each step waits (backs off, not ready) while a cluster does not answer; see relay.startup.
        starting = StartUp(self.health, self.stopping, self.pool.config.backoff)
        active = starting.step("choosing a source", self.pool.choose_initial)
        reader = self._reader = self.pool.reader(active, self._queue_bytes, self.settings.group)
        try:
            # Before the target starts: the Target contract has high_watermarks come first.
            starting.step("reading positions back from the target", lambda: self.ownership.begin(reader))
            if self.stop_at_end:
                self._ends = starting.step("reading the source's end offsets", self.pool.end_offsets)
                # A position beyond the end is not done: the source lost records the relay already
                # relayed (or trails); the relay waits for it instead of calling the run complete.
                self._done = {sp for sp, end in self._ends.items() if self._next.get(sp, -1) == max(end, 0)}
            self.target.start(self._on_ack)
            self.pool.start()
            self.health.running()
            self._loop()
            self._drain()
            self.ownership.end()
        finally:
            self._gate.cancel()
            self.pool.stop()
            if self._reader is not None:
                # In group mode, leaving the group revokes what this instance owns; drained by now.
                self._reader.close()
            self.target.close()
            self.health.stopped()

    def _choose_path(self) -> bool:
        """The passthrough fast path where nothing needs a Message per record; logged either way."""
        target = self.target
        why: str | None
        if self.filters is not None:
            why = "filters are configured"
        elif not self.settings.fast_path:
            why = "fast_path: false"
        elif not isinstance(target, BatchTarget):
            why = f"the target ({type(target).__name__}) takes Message objects only"
        else:
            why = target.passthrough(self._on_raw_ack)
        if why is None:
            assert isinstance(target, BatchTarget)
            self._batch_target = target
            log.info(
                "relay path: passthrough (records go to the target as consumed; positions, budget and "
                "acknowledgements per batch)"
            )
            return True
        log.info("relay path: per record (a Message per record)", reason=why)
        return False

    # -- positions (the ownership's view of the relay) -------------------------------------------
    def resume(self, partitions: Sequence[SourcePartition]) -> None:
        """Ask the target where ``partitions`` resume and start reading them there."""
        resumed = self.target.high_watermarks(partitions)
        fresh = {sp: resumed.get(sp, -1) for sp in partitions}
        log.info(
            "resuming",
            source=self.pool.active,
            partitions=len(fresh),
            from_target=sum(1 for off in fresh.values() if off >= 0),
            from_beginning=sum(1 for off in fresh.values() if off < 0),
        )
        self._next.update(fresh)
        assert self._reader is not None
        self._reader.assign(fresh)

    def forget(self, partitions: Sequence[SourcePartition]) -> None:
        """Stop tracking ``partitions``."""
        for sp in partitions:
            self._next.pop(sp, None)
            self._fingerprints.pop(sp, None)
        self._gate.forget(partitions)

    def owned(self) -> Sequence[SourcePartition]:
        """The partitions read now."""
        return list(self._next)

    def _drain(self) -> None:
        self.health.draining()
        log.info("draining: waiting for the target to acknowledge what is in flight", bytes=self.budget.used)
        if not self.stopping.is_set():
            self.target.flush()  # stop_at_end: the run is only done once everything is acknowledged
            return
        # Stopped by a signal: wait a while, but a target that is away must not keep the process
        # alive forever. Unacknowledged records are simply read again on the next start.
        if not self.target.flush(_DRAIN_TIMEOUT):
            log.warning(
                "the target did not acknowledge everything in time; the rest is read again on the next start",
                seconds=_DRAIN_TIMEOUT,
                bytes=self.budget.used,
            )

    # -- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        last_tick = 0.0
        while not self.stopping.is_set():
            if self.stop_at_end and len(self._done) >= len(self._ends):
                if self.on_progress is not None:
                    self.on_progress(Progress(0, 0))
                log.info("reached the end offsets seen at start", partitions=len(self._ends))
                return
            decision = self.pool.take_switch()
            if decision is not None:
                self._switch(decision)
            self._gate.poll()
            reader = self._reader
            assert reader is not None
            if reader.fatal:
                raise SourceError(reader.fatal)
            batch = reader.consume(_POLL_RECORDS, _POLL_TIMEOUT)
            self.health.polled()
            if batch:
                try:
                    if self.passthrough:
                        self._handle_raw(batch)
                    else:
                        self._handle(batch)
                except TargetRestart as exc:
                    self._restart(str(exc))
            now = time.monotonic()
            if now - last_tick >= 1.0:
                last_tick = now
                self._gate.gate()
                self._report()
                self.ownership.tick(now)

    def _handle(self, batch: Sequence[KafkaMessage]) -> None:
        reader = self._reader
        assert reader is not None
        cluster = reader.cluster.name
        routes, filters = self.routes, self.filters
        messages: list[Message] = []
        # The newest record per partition, keyed by plain (topic, partition): positions and
        # fingerprints are kept per batch, not per record, and a SourcePartition per record cost
        # about as much as the rest of this loop.
        last: dict[tuple[str, int], KafkaMessage] = {}
        events: set[tuple[str, int]] = set()
        total = 0
        for raw in batch:
            topic, partition = raw.topic() or "", raw.partition() or 0
            err = raw.error()
            if err is not None:
                events.add((topic, partition))
                newest = last.pop((topic, partition), None)
                if newest is not None:
                    self._read_up_to(SourcePartition(topic, partition), newest, cluster)
                self._event(raw, err)
                continue
            key, value = raw.key(), raw.value()
            headers = headers_of(raw)
            size = record_size(key, value, headers)
            last[(topic, partition)] = raw
            msg = Message(
                key,
                value,
                headers,
                routes[topic].target,
                cluster,
                topic,
                partition,
                raw.offset() or 0,
                raw.timestamp()[1],
                size,
            )
            if filters is not None and filters(msg) is not None:
                continue
            messages.append(msg)
            total += size
        for (topic, partition), raw in last.items():
            self._read_up_to(SourcePartition(topic, partition), raw, cluster)
        if messages:
            if not self.budget.acquire(total, self.stopping):
                return
            self.ownership.written(messages)
            for msg in messages:
                self.target.write(msg)
        if self._progress is not None:
            # After the writes: everything kept below these positions is written by now.
            nxt = self._next
            read = [SourcePartition(t, p) for t, p in last.keys() | events]
            self._progress.progress({sp: nxt[sp] for sp in read if nxt.get(sp, -1) >= 0})

    def _event(self, raw: KafkaMessage, err: KafkaError) -> None:
        """An error event of the consumer: end of a partition, a position outside the log, or trouble."""
        sp = SourcePartition(raw.topic() or "", raw.partition() or 0)
        if err.code() == KafkaError._PARTITION_EOF:
            self._at_end(sp, raw.offset() or 0)
        elif err.code() in OFFSET_ERRORS:
            self._gate.out_of_range(sp, err)
        else:
            self._source_error(err)

    # -- the passthrough fast path -------------------------------------------------------------------
    def _handle_raw(self, batch: list[KafkaMessage]) -> None:
        """The fast path: records go to the target as consumed, with no Python step per record here.

        Error events come in-band; a batch holding any is taken apart record by record (they are
        rare under load: an end of partition, a position outside the log), and the records before
        each event are written before it is handled, as :meth:`_handle` does.
        """
        if not any(map(_ERROR, batch)):  # a KafkaError is always true
            self._write_raw(batch)
            return
        pending: list[KafkaMessage] = []
        events: set[SourcePartition] = set()
        for raw in batch:
            err = raw.error()
            if err is None:
                pending.append(raw)
                continue
            if pending:
                self._write_raw(pending)
                pending = []
            self._event(raw, err)
            events.add(SourcePartition(raw.topic() or "", raw.partition() or 0))
        if pending:
            self._write_raw(pending)
        if self._progress is not None:
            # An end of partition past transaction markers, or a gap skipped: positions no record
            # carries; every record before them was written above.
            nxt = self._next
            self._progress.progress({sp: nxt[sp] for sp in events if nxt.get(sp, -1) >= 0})

    def _write_raw(self, records: list[KafkaMessage]) -> None:
        """Group ``records`` by source partition (runs of one partition are taken whole, from C), take
        their bytes from the budget per partition, advance positions per partition, and write them."""
        reader = self._reader
        assert reader is not None
        cluster = reader.cluster.name
        parts: dict[SourcePartition, list[KafkaMessage]] = {}
        topic = self._only_topic
        if topic is not None:
            by_partition: dict[int | None, list[KafkaMessage]] = {}
            for partition, run in groupby(records, _PARTITION):
                got = by_partition.get(partition)
                if got is None:
                    by_partition[partition] = list(run)
                else:
                    got.extend(run)
            parts = {SourcePartition(topic, p or 0): recs for p, recs in by_partition.items()}
        else:
            for name, of_topic in groupby(records, _TOPIC):
                for partition, run in groupby(of_topic, _PARTITION):
                    sp = SourcePartition(name or "", partition or 0)
                    got = parts.get(sp)
                    if got is None:
                        parts[sp] = list(run)
                    else:
                        got.extend(run)
        sizes: dict[SourcePartition, int] = {}
        for sp, recs in parts.items():
            self._read_up_to(sp, recs[-1], cluster)
            sizes[sp] = raw_size(recs)
        batch = RawBatch(cluster, parts, sizes)
        if not self.budget.acquire(batch.size, self.stopping):
            return
        self.ownership.written_batch(batch)
        assert self._batch_target is not None
        self._batch_target.write_batch(batch)

    def _on_raw_ack(self, batches: Sequence[RawBatch]) -> None:
        """The target made ``batches`` durable (its thread): release their bytes and count them, per partition."""
        counts: dict[tuple[str, SourcePartition], list[int]] = defaultdict(lambda: [0, 0])
        total = 0
        for batch in batches:
            self.ownership.acked_batch(batch)
            for sp, recs in batch.parts.items():
                c = counts[(batch.cluster, sp)]
                c[0] += len(recs)
                c[1] += batch.sizes[sp]
            total += batch.size
        for (cluster, sp), (n, size) in counts.items():
            labels = {"source_cluster": cluster, "topic": sp.topic, "partition": str(sp.partition)}
            self.metrics.records_relayed.labels(**labels).inc(n)
            self.metrics.bytes_relayed.labels(**labels).inc(size)
        self.budget.release(total)

    def _read_up_to(self, sp: SourcePartition, raw: KafkaMessage, cluster: str) -> None:
        """``raw`` is the newest record read from ``sp`` on ``cluster``: advance the read position past it."""
        offset = raw.offset() or 0
        self._next[sp] = offset + 1
        # Only the newest record per partition matters for the failover check; hashing every
        # value would cost a pass over every byte relayed.
        self._fingerprints[sp] = fingerprint(offset, raw.key(), raw.value(), cluster)
        end = self._ends.get(sp)
        if end is not None and offset + 1 >= end:
            self._done.add(sp)

    def _at_end(self, sp: SourcePartition, offset: int) -> None:
        """A partition-EOF event: the reader has caught up with ``offset`` on ``sp``."""
        if offset > self._next.get(sp, -1):
            self._next[sp] = offset
        end = self._ends.get(sp)
        if end is not None and offset >= end:
            self._done.add(sp)

    def _skipped(self, sp: SourcePartition, offset: int) -> None:
        """A gap moved ``sp``'s position to ``offset``, the log start (``on_gap: skip``)."""
        self._next[sp] = offset
        self._fingerprints.pop(sp, None)
        end = self._ends.get(sp)
        if end is not None and offset >= end:
            self._done.add(sp)

    def _source_error(self, err: KafkaError) -> None:
        if err.code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError._AUTHENTICATION,
            KafkaError.SASL_AUTHENTICATION_FAILED,
        ):
            raise SourceError(f"source {self.pool.active}: {err.str()}")
        log.warning("source reported an error", source=self.pool.active, error=err.str())
        self.pool.check_now()

    # -- acknowledgement (target thread) -----------------------------------------------------------
    def _on_ack(self, messages: Sequence[Message]) -> None:
        counts: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
        total = 0
        for msg in messages:
            c = counts[(msg.source_cluster, msg.source_topic, msg.source_partition)]
            c[0] += 1
            c[1] += msg.size
            total += msg.size
        self.ownership.acked(messages)
        self.health.acked()
        for (cluster, topic, partition), (n, size) in counts.items():
            self.metrics.records_relayed.labels(source_cluster=cluster, topic=topic, partition=str(partition)).inc(n)
            self.metrics.bytes_relayed.labels(source_cluster=cluster, topic=topic, partition=str(partition)).inc(size)
        self.budget.release(total)

    # -- failover, restarts ------------------------------------------------------------------------
    def _switch(self, decision: Decision) -> None:
        old, to = self._reader, decision.to
        assert old is not None and to is not None
        log.warning(
            "switching source",
            from_source=old.cluster.name,
            to_source=to,
            reason=decision.reason,
            detail=decision.detail,
        )
        self._gate.cancel()
        old.close()
        self._reader = None
        self._reader = self.pool.reader(to, self._queue_bytes)
        self.pool.switched(decision)
        self._gate.switched(old.cluster.name)

    def _restart(self, why: str) -> None:
        """The target dropped what was in flight: re-read positions from it and seek there."""
        log.warning("target restarted; re-reading positions from the target", detail=why)
        self.budget.reset()
        partitions = list(self._next)
        self._fingerprints.clear()
        self._gate.reset()
        if self._reader is not None:
            self._reader.close()
        self._reader = self.pool.reader(self.pool.active, self._queue_bytes)
        self.resume(partitions)

    # -- reporting ---------------------------------------------------------------------------------
    def _report(self) -> None:
        health = self.pool.latest(self.pool.active)
        if health is None or not health.ok:
            return
        remaining = 0
        for sp, end in health.end_offsets.items():
            nxt = self._next.get(sp, -1)
            lag = max(0, end - nxt) if nxt >= 0 else end
            self.metrics.lag.labels(topic=sp.topic, partition=str(sp.partition)).set(lag)
        if self.stop_at_end and self.on_progress is not None:
            for sp, end in self._ends.items():
                if sp not in self._done:
                    nxt = self._next.get(sp, -1)
                    remaining += max(0, end - nxt) if nxt >= 0 else end
            self.on_progress(Progress(remaining, len(self._ends) - len(self._done)))

    @property
    def positions(self) -> Mapping[SourcePartition, int]:
        """Next source offset per partition as read (not acknowledged); for tests and progress."""
        return dict(self._next)
