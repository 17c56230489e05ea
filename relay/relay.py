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

Reads never jump. The source consumer runs with ``auto.offset.reset: error``; a position outside
the log is an error event for that partition, and the partition's watermarks on the active source
say what it is: below the log start, a *gap* (``on_gap``: stop, or skip to the log start and count
the loss); above the end, the source *trails* the relay's position. A partition the active source
has not reached (after a failover, or found trailing) *waits*: it is not read until that source's
end offset reaches the position and the record before it matches what the relay read there
(verified on a consumer of its own, so the other partitions keep flowing). Waiting partitions are
published to the pool, whose decision switches to a healthy source that holds every position.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Message as KafkaMessage

from relay.budget import ByteBudget
from relay.failover import Decision, RelayView
from relay.kafkautil import client_error_text, headers_of
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
    Verification,
    fingerprint,
)
from relay.target import BatchTarget, PartitionOwner, ProgressSink, Target, TargetRestart

log = structlog.get_logger("kafka_lfs_relay.relay")

# A filter chain returns None to keep a record, or the name of the filter that dropped it.
FilterFn = Callable[[Message], "str | None"]

_POLL_RECORDS = 2000
_POLL_TIMEOUT = 0.2
_DRAIN_TIMEOUT = 30.0
# "Still waiting" lines while a source has not reached the relay's position: the first after this
# many seconds, then twice as long each time, up to the last.
_WAIT_LOG_FIRST = 10.0
_WAIT_LOG_MAX = 300.0
# An offset error on a position the watermarks say is inside the log is retried at once, but not
# twice within this many seconds (then the partition waits for the next health check).
_RESEEK_AGAIN = 5.0
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
        # Partitions not read now (since when): the active source has not reached their position
        # (``_short``), or the record before it is still to be verified there (``_unverified``).
        self._waiting: dict[SourcePartition, float] = {}
        self._short: set[SourcePartition] = set()
        self._unverified: set[SourcePartition] = set()
        self._verification: Verification | None = None
        self._wait_log_at = 0.0
        self._wait_log_every = _WAIT_LOG_FIRST
        self._reseeked: dict[SourcePartition, float] = {}
        # The end offset a partition's watermarks showed when it was found outside the log, and
        # when: health checks older than that do not let it go (they may predate a truncation).
        self._seen_end: dict[SourcePartition, tuple[float, int]] = {}
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
        active = self.pool.choose_initial()
        self._reader = self.pool.reader(active, self._queue_bytes, self.settings.group)
        try:
            # Before the target starts: the Target contract has high_watermarks come first.
            self.ownership.begin(self._reader)
            if self.stop_at_end:
                self._ends = self.pool.end_offsets()
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
            self._cancel_verification()
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
            self._waiting.pop(sp, None)
            self._short.discard(sp)
            self._unverified.discard(sp)
            self._seen_end.pop(sp, None)

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
            if self._verification is not None and self._verification.done():
                self._verified()
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
                self._gate()
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
            self._out_of_range(sp)
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

    def _source_error(self, err: KafkaError) -> None:
        if err.code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError._AUTHENTICATION,
            KafkaError.SASL_AUTHENTICATION_FAILED,
        ):
            raise SourceError(f"source {self.pool.active}: {err.str()}")
        log.warning("source reported an error", source=self.pool.active, error=err.str())
        self.pool.check_now()

    # -- positions outside the log: gaps, and sources that trail ------------------------------------
    def _out_of_range(self, sp: SourcePartition) -> None:
        """The reader's position on ``sp`` is outside the active source's log; librdkafka stopped fetching it."""
        reader = self._reader
        assert reader is not None
        pos = self._next.get(sp, -1)
        if pos < 0:
            # Nothing relayed yet: read from whatever the log's beginning is now; never a gap.
            reader.reposition({sp: -1})
            return
        try:
            low, high = reader.watermarks(sp, self.pool.config.request_timeout * 5)
        except KafkaException as exc:
            log.warning(
                "position outside the source log, and its bounds could not be read; waiting",
                source=reader.cluster.name,
                topic=sp.topic,
                partition=sp.partition,
                position=pos,
                error=client_error_text(exc.args[0].str()),
            )
            self._wait([sp], seen_end=-1)
            self.pool.check_now()
            return
        if pos < low:
            self._gap(sp, pos, low)
        elif pos > high:
            # The source trails the relay (or lost records already relayed): wait for it, and verify
            # the record before the position again once it is back, as after a failover.
            if sp in self._fingerprints and self.pool.config.verify_on_switch:
                self._unverified.add(sp)
            self._wait([sp], seen_end=high)
        elif time.monotonic() - self._reseeked.get(sp, -_RESEEK_AGAIN) < _RESEEK_AGAIN:
            self._wait([sp], seen_end=pos - 1)
        else:
            self._reseeked[sp] = time.monotonic()
            log.warning(
                "position reported outside the source log, which holds it; reading it again",
                source=reader.cluster.name,
                topic=sp.topic,
                partition=sp.partition,
                position=pos,
                log_start=low,
                log_end=high,
            )
            reader.reposition({sp: pos})

    def _gap(self, sp: SourcePartition, pos: int, low: int) -> None:
        """Offsets ``[pos, low)`` of ``sp`` were deleted from the active source before they were relayed."""
        reader = self._reader
        assert reader is not None
        cluster = reader.cluster.name
        where = f"source {cluster}: topic {sp.topic} partition {sp.partition}: offsets [{pos}, {low})"
        if self.routes[sp.topic].on_gap == "fail":
            raise SourceError(
                f"{where} were deleted (retention) before they were relayed; on_gap is fail, so the relay stops "
                f"(on_gap: skip would go on from offset {low} and count them in records_lost_total)"
            )
        log.error(
            "records deleted before they were relayed are skipped (on_gap: skip)",
            source=cluster,
            topic=sp.topic,
            partition=sp.partition,
            missing=f"[{pos}, {low})",
            records=low - pos,
        )
        self.metrics.records_lost.labels(reason="retention", topic=sp.topic, partition=str(sp.partition)).inc(low - pos)
        self._next[sp] = low
        self._fingerprints.pop(sp, None)
        end = self._ends.get(sp)
        if end is not None and low >= end:
            self._done.add(sp)
        reader.reposition({sp: low})

    def _wait(self, partitions: Sequence[SourcePartition], seen_end: int | None = None) -> None:
        """Stop reading ``partitions`` until the active source holds their positions (see :meth:`_gate`).

        ``seen_end``: the end offset just seen for them; only a later health check can let them go.
        """
        now = time.monotonic()
        for sp in partitions:
            self._waiting.setdefault(sp, now)
            if seen_end is not None:
                self._seen_end[sp] = (now, seen_end)
        self._gate()

    def _gate(self) -> None:
        """Let waiting partitions go once the active source holds their positions and verified them.

        Runs about once a second, after a switch and after a verification. Partitions the active
        source has not reached are published to the pool (a source holding them is switched to).
        """
        reader = self._reader
        if reader is None:
            return
        if not self._waiting:
            if self._short:
                self._caught_up(reader.cluster.name)
            return
        health = self.pool.latest(reader.cluster.name)
        ends = health.end_offsets if health is not None and health.ok else {}
        busy = self._verification.fingerprints if self._verification is not None else {}
        short: dict[SourcePartition, int] = {}
        check: dict[SourcePartition, Fingerprint] = {}
        ready: dict[SourcePartition, int] = {}
        for sp in self._waiting:
            pos = self._next.get(sp, -1)
            if sp in busy:
                continue
            end = ends.get(sp, -1)
            seen = self._seen_end.get(sp)
            if seen is not None:
                if health is not None and health.checked_at > seen[0]:
                    del self._seen_end[sp]
                else:
                    end = seen[1]
            if pos >= 0 and end < pos:
                short[sp] = end
            elif sp in self._unverified and sp in self._fingerprints:
                check[sp] = self._fingerprints[sp]
            else:
                ready[sp] = pos
        for sp in ready:
            del self._waiting[sp]
            self._unverified.discard(sp)
        reader.reposition(ready)
        if check and self._verification is None:
            self._verification = Verification(reader.cluster, check, self.pool.config.request_timeout * 5)
        self._report_short(reader.cluster.name, short)

    def _report_short(self, source: str, short: Mapping[SourcePartition, int]) -> None:
        """Publish, count and log the partitions the active source has not reached."""
        if not short:
            if self._short:
                self._caught_up(source)
            return
        new = set(short) - self._short
        self._short = set(short)
        self.metrics.source_catching_up.labels(source=source).set(len(short))
        self.health.catching_up(f"{len(short)} partition(s) wait for source {source} to reach the relay's position")
        self.pool.publish(RelayView(dict(self._next), frozenset(short)))
        where = sorted(
            f"{sp.topic}/{sp.partition}: end {end}, position {self._next.get(sp, -1)}" for sp, end in short.items()
        )
        now = time.monotonic()
        if new:
            log.warning(
                "waiting for the source to reach the relay's position; these partitions are not read until it does "
                "(never re-read, never skipped)",
                source=source,
                partitions=where[:10],
                waiting=len(short),
            )
            if now >= self._wait_log_at:
                self._wait_log_at, self._wait_log_every = now + _WAIT_LOG_FIRST, _WAIT_LOG_FIRST
        elif now >= self._wait_log_at:
            since = min(self._waiting.get(sp, now) for sp in short)
            log.warning(
                "still waiting for the source to reach the relay's position",
                source=source,
                partitions=where[:10],
                waiting=len(short),
                seconds=round(now - since),
            )
            self._wait_log_every = min(self._wait_log_every * 2, _WAIT_LOG_MAX)
            self._wait_log_at = now + self._wait_log_every

    def _caught_up(self, source: str) -> None:
        log.info("the source reached the relay's position on every partition that waited for it", source=source)
        self._short = set()
        self._wait_log_at, self._wait_log_every = 0.0, _WAIT_LOG_FIRST
        self.metrics.source_catching_up.labels(source=source).set(0)
        self.health.catching_up(None)
        self.pool.publish(RelayView())

    def _verified(self) -> None:
        """A verification finished: let matching partitions go, stop on a mismatch, retry the rest later."""
        done, self._verification = self._verification, None
        reader = self._reader
        if done is None or reader is None or done.source != reader.cluster.name:
            return
        mismatches: list[str] = []
        pending: list[str] = []
        for sp, outcome in done.outcomes.items():
            if sp not in self._waiting:
                continue
            if outcome.kind == "mismatch":
                mismatches.append(outcome.detail)
            elif outcome.kind == "gone":
                log.warning("could not verify this position: the record before it is gone", detail=outcome.detail)
                self._unverified.discard(sp)
            elif outcome.kind == "match":
                self._unverified.discard(sp)
            else:
                pending.append(f"{sp.topic}/{sp.partition}: {outcome.detail}")
        if pending:
            log.info("positions not verified yet; trying again", source=done.source, partitions=sorted(pending)[:10])
        if mismatches:
            where = ", ".join(sorted(mismatches)[:5])
            origin = sorted({fp.source for fp in done.fingerprints.values() if fp.source} - {done.source})
            if origin:
                raise SourceError(
                    f"sources {', '.join(origin)} and {done.source} hold different records at {where}; refusing to "
                    "go on because offsets would not line up (records would be lost or duplicated)"
                )
            raise SourceError(
                f"source {done.source} now holds other records than the relay read from it at {where} (was the "
                "topic deleted and created again?); refusing to go on because offsets would not line up"
            )
        self._gate()

    def _cancel_verification(self) -> None:
        if self._verification is not None:
            self._verification.cancel()
            self._verification = None

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
        self._cancel_verification()
        old.close()
        self._reader = None
        self.metrics.source_catching_up.labels(source=old.cluster.name).set(0)
        self.health.catching_up(None)
        self._reader = self.pool.reader(to, self._queue_bytes)
        self.pool.switched(decision)
        # Every partition waits until the new source holds its position and, where the relay read
        # something, the record before it matches; partitions that are ready go on at once.
        self._short = set()
        self._seen_end.clear()
        self._unverified = set(self._fingerprints) if self.pool.config.verify_on_switch else set()
        now = time.monotonic()
        self._waiting = dict.fromkeys(self._next, now)
        self._gate()

    def _restart(self, why: str) -> None:
        """The target dropped what was in flight: re-read positions from it and seek there."""
        log.warning("target restarted; re-reading positions from the target", detail=why)
        self.budget.reset()
        partitions = list(self._next)
        self._fingerprints.clear()
        self._cancel_verification()
        self._waiting.clear()
        self._unverified.clear()
        self._seen_end.clear()
        if self._short:
            self._caught_up(self.pool.active)
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
