"""The relay: read from the active source, filter, write to the target, resume exactly.

One thread runs :meth:`Relay.run`: it owns the source consumer, cuts each poll into runs (one
source partition's records each, :mod:`relay.run`), filters them, takes their bytes from the
budget and hands them to the target. The target acknowledges runs from its own thread
(:class:`relay.acks.RelayAcks`), which only releases budget and counts. The health checker runs in
the pool's thread and only *proposes* switches; this thread carries them out between two polls,
so a consumer is never used by two threads. Which partitions are read, and how that changes, is
an :class:`~relay.ownership.Ownership`: all of them, or a consumer group's share.

Read positions (:class:`~relay.readpositions.ReadPositions`) move only once the runs below them
are handed to the target, and only place consumers; what the relay resumes from after a crash is
always what the target reports. Reads never jump: a position outside the active source's log (a
gap, or a source that trails the relay) makes its partition wait in the
:class:`~relay.gate.SourceGate` instead of moving it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from relay.acks import LagClock, RelayAcks
from relay.budget import ByteBudget
from relay.discovery import TopicWatch
from relay.failover import Decision
from relay.gate import SourceGate, SourceTopicRecreated
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.ownership import AllPartitions, GroupShare, Ownership
from relay.readpositions import ReadPositions
from relay.run import Run, cut
from relay.selection import Change, Routes
from relay.settings import RelaySettings
from relay.sourcepool import OFFSET_ERRORS, Fingerprint, SourceError, SourcePool, SourceReader, fingerprint
from relay.startup import StartUp
from relay.target import PartitionOwner, RouteTaker, RunTarget, TargetRestart

log = structlog.get_logger("kafka_lfs_relay.relay")

RunFilter = Callable[[Run], Run]
"""The filter chain on the record path: a run in, the run with only the records it keeps out."""

_POLL_RECORDS = 2000
_POLL_TIMEOUT = 0.2
_DRAIN_TIMEOUT = 30.0
# The client's method descriptor, for map(): called from C, no Python frame per record.
_ERROR = KafkaMessage.error


@dataclass(frozen=True)
class Progress:
    """What ``stop_at_end`` is waiting for: records left, and partitions left."""

    remaining: int
    partitions_left: int


class Relay:
    """Moves records from a :class:`SourcePool` through filters into a :class:`RunTarget`."""

    def __init__(
        self,
        pool: SourcePool,
        target: RunTarget,
        settings: RelaySettings,
        metrics: RelayMetrics,
        filters: RunFilter | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        watch: TopicWatch | None = None,
    ) -> None:
        self.pool = pool
        self.target = target
        self.settings = settings
        # Routes grow while running (live discovery); the relay's thread alone adds to them.
        self.routes = Routes(settings.topics)
        self._targets = {t.source: t.target for t in settings.topics}
        self._watch = watch
        self.metrics = metrics
        self.filters = filters
        self.on_progress = on_progress
        self.budget = ByteBudget(settings.max_in_flight, metrics.in_flight_bytes.set)
        self.stopping = threading.Event()
        # /healthz and /readyz (relay.health): the loop, the acks and the ownership report to it.
        self.health = metrics.health
        self.health.watch_source(lambda: (pool.active, pool.latest(pool.active)))
        self._queue_bytes = settings.queue_bytes
        self.reads = ReadPositions()
        self._reader: SourceReader | None = None
        self._gate = SourceGate(pool, self.routes, self.reads, lambda: self._reader, metrics, self.health)
        self._lag = LagClock(metrics.replication_lag)
        self.ownership: Ownership
        if settings.group is None:
            self.ownership = AllPartitions(pool, self)
        else:
            if not isinstance(target, PartitionOwner):
                raise TypeError("group mode needs a target that implements relay.target.PartitionOwner")
            self.ownership = GroupShare(settings.group, list(self.routes), target, self, self.budget, metrics)
            self.health.in_group(settings.group.id)
        self.acks = RelayAcks(self.budget, metrics, self.health, self._lag, self.ownership)

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the relay to drain and return (safe from a signal handler or another thread)."""
        self.stopping.set()

    def run(self) -> None:
        """Relay until stopped, or until the end offsets seen at start when ``stop_at_end``.

        Raises :class:`RelayError` on anything unrecoverable; what was acknowledged stays
        acknowledged and nothing else is marked as done.
        """
        # Each step waits (backs off, not ready) while a cluster does not answer; see relay.startup.
        starting = StartUp(self.health, self.stopping, self.pool.config.backoff)
        active = starting.step("choosing a source", self.pool.choose_initial)
        reader = self._reader = self.pool.reader(active, self._queue_bytes, self.settings.group)
        try:
            if self._watch is not None:
                self._retopic(self._watch.scan())
            # Before the target starts: the target contract has high_watermarks come first.
            starting.step("reading positions back from the target", lambda: self.ownership.begin(reader))
            if self.settings.stop_at_end:
                self.reads.stop_at(starting.step("reading the source's end offsets", self.pool.end_offsets))
            self.target.start(self.acks)
            self.pool.start()
            if self._watch is not None and not self.settings.stop_at_end:
                self._watch.start()  # stop_at_end relays the topics selected at start
            self.health.running()
            self._loop()
            self._drain()
            self.ownership.end()
        finally:
            if self._watch is not None:
                self._watch.stop()
            self._gate.cancel()
            self.pool.stop()
            if self._reader is not None:
                # In group mode, leaving the group revokes what this instance owns; drained by now.
                self._reader.close()
            self.target.close()
            self.health.stopped()

    # -- which partitions (the ownership's view of the relay, relay.ownership.Reads) -----------------
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
        self.reads.resumed(fresh)
        assert self._reader is not None
        self._reader.assign(fresh)

    def forget(self, partitions: Sequence[SourcePartition]) -> None:
        """Stop tracking ``partitions``."""
        self.reads.forget(partitions)
        self._lag.forget(partitions)
        self._gate.forget(partitions)

    def topics(self) -> tuple[str, ...]:
        """The source topics selected now (discovery adds and removes them); any thread may ask."""
        # tuple() copies the keys in one C call, which holds the GIL: the relay's thread cannot
        # change the dict in the middle of it.
        return tuple(self._targets)

    def owned(self) -> Sequence[SourcePartition]:
        """The partitions read now."""
        return self.reads.owned()

    def drop(self, partitions: Sequence[SourcePartition]) -> None:
        """Stop reading ``partitions`` (their topic was deleted on the source); what is in flight commits."""
        assert self._reader is not None
        self._reader.unassign(partitions)
        self.forget(partitions)

    def _retopic(self, change: Change | None) -> None:
        """Carry out what discovery found: new routes for the relay, the target and the health checks,
        then the ownership reads the new topics (or stops reading the deleted ones)."""
        if not change:
            return
        if change.added:
            self.routes.add(change.added)
            self._targets.update({r.source: r.target for r in change.added})
            if isinstance(self.target, RouteTaker):
                self.target.add_routes(change.added)
            log.info("topics selected", topics={r.source: r.target for r in change.added}, source=self.pool.active)
        for topic in change.removed:
            log.warning("topic no longer on the source; not read any more", topic=topic, source=self.pool.active)
        self.pool.retopic([r.source for r in change.added], change.removed)
        self.ownership.retopic([r.source for r in change.added], change.removed)

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
            if self.settings.stop_at_end and self.reads.finished():
                if self.on_progress is not None:
                    self.on_progress(Progress(0, 0))
                log.info("reached the end offsets seen at start", partitions=self.reads.stopping_at())
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
            try:
                self._handle(batch, more=len(batch) >= _POLL_RECORDS)
                if not batch:
                    # The target raises what its sender met (a producer restarted after a fencing, which
                    # dropped the records in flight; a failure) only when it is handed something. A relay
                    # that read the source to its end hands it nothing, so it looks: else those records
                    # would wait for the source's next one, and a failure would never stop it.
                    self.target.flush(0)
            except TargetRestart as exc:
                self._restart(str(exc))
            except SourceTopicRecreated as exc:
                self._source_recreated(exc)
            now = time.monotonic()
            if now - last_tick >= 1.0:
                last_tick = now
                self._gate.gate()
                self._report()
                self.ownership.tick(now)
                if self._watch is not None:
                    self._retopic(self._watch.take())

    def _handle(self, batch: list[KafkaMessage], more: bool) -> None:
        """Hand ``batch`` to the target; ``more``: the source has more to give at once.

        Error events come in-band. The records before an event are handed over before it is
        handled, so every position an event moves (an end of partition, a gap skipped) lies past
        records already written; if the budget refuses a part of the poll (the relay is stopping),
        nothing after it is handed over either, so a partition never gets a hole.
        """
        if not any(map(_ERROR, batch)):  # a KafkaError is always true
            self._take(batch, more)
            return
        start = 0
        for i, raw in enumerate(batch):
            err = raw.error()
            if err is None:
                continue
            if i > start and not self._take(batch[start:i], True):
                return
            start = i + 1
            self._event(raw, err)
        self._take(batch[start:], more)

    def _take(self, records: Sequence[KafkaMessage], more: bool) -> bool:
        """Cut ``records`` into runs, filter them and hand them over, with the moves no record carried
        first; False if the budget refused them (the relay is stopping)."""
        reader = self._reader
        assert reader is not None
        cluster = reader.cluster.name
        runs = cut(cluster, records, self._targets) if records else []
        # The record read last per partition, kept or not: what a failover verifies.
        newest = {run.source: _fingerprint(run.records[-1], cluster) for run in runs}
        if self.filters is not None:
            runs = [self.filters(run) for run in runs]
        moves = self.reads.take_moves()
        if moves:
            runs = [Run.progress(cluster, sp, self._targets[sp.topic], off) for sp, off in moves.items()] + runs
        return self._hand(runs, newest, more) if runs else True

    def _hand(self, runs: Sequence[Run], newest: Mapping[SourcePartition, Fingerprint], more: bool) -> bool:
        """Take ``runs``' bytes from the budget, hand them to the target, then move the read positions."""
        size = sum(run.size for run in runs)
        while not self.budget.acquire(size, self.stopping):
            if self.stopping.is_set():
                return False
            # The target failed while the budget waited for its acknowledgements: this raises it.
            self.target.flush(0)
            self.budget.resume()  # a failure dealt with already woke the budget late
        self.ownership.written(runs)
        self._lag.written(runs)
        self.target.write_runs(runs, more)
        for run in runs:
            self.reads.advanced(run.source, run.next, newest.get(run.source))
        return True

    def _event(self, raw: KafkaMessage, err: KafkaError) -> None:
        """An error event of the consumer: end of a partition, a position outside the log, or trouble."""
        sp = SourcePartition(raw.topic() or "", raw.partition() or 0)
        if err.code() == KafkaError._PARTITION_EOF:
            self.reads.at_end(sp, raw.offset() or 0)
        elif err.code() in OFFSET_ERRORS:
            self._gate.out_of_range(sp, err)
        else:
            self._source_error(err)

    def _source_error(self, err: KafkaError) -> None:
        if err.code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError._AUTHENTICATION,
            KafkaError.SASL_AUTHENTICATION_FAILED,
        ):
            raise SourceError(f"source {self.pool.active}: {err.str()}")
        log.warning("source reported an error", source=self.pool.active, error=err.str())
        self.pool.check_now()

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

    def _source_recreated(self, exc: SourceTopicRecreated) -> None:
        """A source topic was deleted and created again under the relay: once what was read before is
        committed, positions are read again, and the target starts that topic over from its beginning
        (it tells a new topic id from the one its entries hold)."""
        if self.settings.group is not None:
            # A member's partitions are resumed by the group's assignment: a new start does that.
            raise SourceError(f"{exc}; this member stops, and relays the topic from its beginning once started again")
        log.warning("source topic deleted and created again; re-reading positions from the target", detail=str(exc))
        with contextlib.suppress(TargetRestart):  # what was in flight is then read again: the same re-read
            self.target.flush()
        self._reread()

    def _restart(self, why: str) -> None:
        """The target dropped what was in flight: re-read positions from it and seek there."""
        log.warning("target restarted; re-reading positions from the target", detail=why)
        self._reread()

    def _reread(self) -> None:
        """Read every partition's position from the target again, with a new reader seeking there."""
        self.budget.reset()
        self._lag.reset()
        partitions = self.reads.owned()
        self.reads.forget_fingerprints()
        self._gate.reset()
        if self._reader is not None:
            self._reader.close()
        self._reader = self.pool.reader(self.pool.active, self._queue_bytes)
        self.resume(partitions)

    # -- reporting ---------------------------------------------------------------------------------
    def _report(self) -> None:
        owned = self.reads.owned()
        self._lag.report(owned)
        health = self.pool.latest(self.pool.active)
        if health is None or not health.ok:
            return
        for sp, end in health.end_offsets.items():
            nxt = self.reads.get(sp)
            lag = max(0, end - nxt) if nxt >= 0 else end
            self.metrics.lag.labels(topic=sp.topic, partition=str(sp.partition)).set(lag)
        if self.settings.stop_at_end and self.on_progress is not None:
            self.on_progress(Progress(*self.reads.remaining()))

    @property
    def read_positions(self) -> Mapping[SourcePartition, int]:
        """Next source offset per partition as read (not acknowledged); for tests and progress."""
        return self.reads.snapshot()


def _fingerprint(record: KafkaMessage, cluster: str) -> Fingerprint:
    return fingerprint(record.offset() or 0, record.key(), record.value(), cluster)
