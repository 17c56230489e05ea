"""Which source partitions this relay reads, and how they come and go: all of them, or a group's share.

:class:`AllPartitions` (one instance reads every partition, and picks up partitions added while it
runs) and :class:`GroupShare` (instances share the partitions as one consumer group) are the two
answers. The relay's loop is the same for both: it calls the hooks of :class:`Ownership`.

Threads: every hook runs on the relay's thread (group callbacks run inside the consumer's poll,
which the relay's thread calls), except ``acked``, which the target's thread calls.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from relay.budget import ByteBudget
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.run import Run
from relay.settings import GroupConfig
from relay.sourcepool import SourcePool, SourceReader
from relay.target import PartitionOwner

log = structlog.get_logger("kafka_lfs_relay.relay")


class Reads(Protocol):
    """What an ownership may change in the relay: which partitions it reads."""

    def resume(self, partitions: Sequence[SourcePartition]) -> None:
        """Ask the target where ``partitions`` resume and start reading them there."""
        ...

    def forget(self, partitions: Sequence[SourcePartition]) -> None:
        """Stop tracking ``partitions`` (they belong to another instance now)."""
        ...

    def owned(self) -> Sequence[SourcePartition]:
        """The partitions read now."""
        ...

    def drop(self, partitions: Sequence[SourcePartition]) -> None:
        """Stop reading ``partitions`` and tracking them (their topic was deleted on the source)."""
        ...


class Ownership(Protocol):
    """The relay loop's hooks for one way of owning partitions."""

    def begin(self, reader: SourceReader) -> None:
        """Start owning partitions through ``reader`` (the target has been started)."""
        ...

    def written(self, runs: Sequence[Run]) -> None:
        """``runs`` are about to be handed to the target."""
        ...

    def acked(self, runs: Sequence[Run]) -> None:
        """The target acknowledged ``runs`` (called on the target's thread)."""
        ...

    def tick(self, now: float) -> None:
        """Called about once a second between polls."""
        ...

    def end(self) -> None:
        """The relay drained; called before the reader is closed."""
        ...

    def retopic(self, added: Sequence[str], removed: Sequence[str]) -> None:
        """Topics were selected (``added``: read them from where the target says) or deleted on the
        source (``removed``: stop reading them); before :meth:`begin`, only remembered."""
        ...


def _names(partitions: Sequence[SourcePartition]) -> list[str]:
    return [f"{sp.topic}/{sp.partition}" for sp in partitions]


class AllPartitions:
    """One relay reads every partition of the configured topics; new partitions are picked up as they appear."""

    def __init__(self, pool: SourcePool, reads: Reads) -> None:
        self._pool = pool
        self._reads = reads
        self._last_check = time.monotonic()
        self._begun = False

    def begin(self, reader: SourceReader) -> None:
        """Read every partition the active source has, from where the target says each resumes."""
        self._begun = True
        counts = self._pool.partitions()
        self._reads.resume([SourcePartition(t, p) for t, n in counts.items() for p in range(n)])

    def written(self, runs: Sequence[Run]) -> None:
        """Nothing to track per partition."""

    def acked(self, runs: Sequence[Run]) -> None:
        """Nothing to track per partition."""

    def tick(self, now: float) -> None:
        """Every few health-check intervals, look for partitions added to a source topic while running."""
        if now - self._last_check < self._pool.config.healthcheck_interval * 5:
            return
        self._last_check = now
        try:
            counts = self._pool.partitions()
        except Exception:  # reachability is the health checker's to report; try again later
            return
        new = {SourcePartition(t, p) for t, n in counts.items() for p in range(n)} - set(self._reads.owned())
        if new:
            log.warning("new source partitions found", partitions=_names(sorted(new)))
            self._reads.resume(sorted(new))

    def end(self) -> None:
        """Nothing to do."""

    def retopic(self, added: Sequence[str], removed: Sequence[str]) -> None:
        """Read the partitions of ``added`` from where the target says; stop reading those of ``removed``."""
        if not self._begun:
            return  # begin() reads every topic of the pool
        gone = set(removed)
        dropped = [sp for sp in self._reads.owned() if sp.topic in gone]
        if dropped:
            self._reads.drop(dropped)
        if added:
            counts = self._pool.partitions(added)
            fresh = [SourcePartition(t, p) for t, n in counts.items() for p in range(n)]
            if fresh:
                self._reads.resume(fresh)


class GroupShare:
    """Instances with the same group id share the partitions; Kafka assigns them (cooperative-sticky).

    Every assignment resumes from the target, after the target fenced the partitions' previous
    owners. The group's committed offsets are written only so that standard lag tooling shows the
    relay's lag; they are never read back.
    """

    def __init__(
        self,
        group: GroupConfig,
        topics: Sequence[str],
        target: PartitionOwner,
        reads: Reads,
        budget: ByteBudget,
        metrics: RelayMetrics,
    ) -> None:
        self._group = group
        self._topics = list(topics)
        self._target = target
        self._reads = reads
        self._budget = budget
        self._metrics = metrics
        self._reader: SourceReader | None = None
        self._callbacks = {"on_assign": self._assigned, "on_revoke": self._revoked, "on_lost": self._lost}
        # Bytes in flight per partition (to give back the budget of a lost partition) and the
        # next offset the target acknowledged (committed to the group).
        self._inflight: dict[SourcePartition, int] = defaultdict(int)
        self._acked: dict[SourcePartition, int] = {}
        self._committed: dict[SourcePartition, int] = {}

    def begin(self, reader: SourceReader) -> None:
        """Join the group; the callbacks below run inside later polls."""
        self._reader = reader
        log.info("joining consumer group", group=self._group.id, source=reader.cluster.name)
        if self._topics:  # else the first topic selected subscribes (retopic)
            reader.subscribe(self._topics, **self._callbacks)

    def written(self, runs: Sequence[Run]) -> None:
        """Count the bytes in flight per partition."""
        inflight = self._inflight
        for run in runs:
            inflight[run.source] += run.size

    def acked(self, runs: Sequence[Run]) -> None:
        """Remember the acknowledged positions and take their bytes off the partitions' count."""
        for run in runs:
            sp = run.source
            self._acked[sp] = max(run.next, self._acked.get(sp, -1))
            self._inflight[sp] = max(0, self._inflight.get(sp, 0) - run.size)

    def tick(self, now: float) -> None:
        """Commit the acknowledged positions to the group, so lag tooling sees them."""
        self._commit(asynchronous=True)

    def end(self) -> None:
        """Commit the final positions before leaving the group."""
        self._commit(asynchronous=False)

    def retopic(self, added: Sequence[str], removed: Sequence[str]) -> None:
        """Subscribe to the topics as they are now: the group assigns the new topics' partitions, and
        revokes those of deleted topics (after committing what is in flight for them)."""
        gone = set(removed)
        self._topics = [t for t in self._topics if t not in gone] + [t for t in added if t not in self._topics]
        if self._reader is None:
            return
        if self._topics:
            self._reader.subscribe(self._topics, **self._callbacks)
        else:
            self._reader.consumer.unsubscribe()

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        sps = [SourcePartition(tp.topic, tp.partition) for tp in partitions]
        self._metrics.rebalances.labels(kind="assigned").inc()
        if not sps:
            # Joined with nothing to own (more instances than partitions): a standby, and ready.
            self._metrics.health.owns(len(self._reads.owned()))
            return
        # The target fences the partitions' previous owners, then reads their positions back.
        self._reads.resume(sps)
        self._metrics.partitions_owned.set(len(self._reads.owned()))
        self._metrics.health.owns(len(self._reads.owned()))
        log.info("partitions assigned", partitions=_names(sps), owned=len(self._reads.owned()))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        sps = [SourcePartition(tp.topic, tp.partition) for tp in partitions]
        self._metrics.rebalances.labels(kind="revoked").inc()
        if not sps:
            return
        # Revocation is orderly: finish what is in flight so the next owner starts right after it.
        self._target.release(sps, flush=True)
        self._commit(asynchronous=False)
        consumer.incremental_unassign(partitions)
        self._forget(sps)
        log.info("partitions revoked", partitions=_names(sps), owned=len(self._reads.owned()))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        sps = [SourcePartition(tp.topic, tp.partition) for tp in partitions]
        self._metrics.rebalances.labels(kind="lost").inc()
        # Lost (session timed out): another instance may own them already. Abandon what is in
        # flight for them; their new owner's producers fence ours if we try to write anyway.
        self._target.release(sps, flush=False)
        consumer.incremental_unassign(partitions)
        self._budget.release(sum(self._inflight.pop(sp, 0) for sp in sps))
        self._forget(sps)
        log.warning("partitions lost", partitions=_names(sps), owned=len(self._reads.owned()))

    def _forget(self, sps: Sequence[SourcePartition]) -> None:
        self._reads.forget(sps)
        for sp in sps:
            self._acked.pop(sp, None)
            self._committed.pop(sp, None)
        self._metrics.partitions_owned.set(len(self._reads.owned()))
        self._metrics.health.owns(len(self._reads.owned()))

    def _commit(self, asynchronous: bool) -> None:
        """Write acknowledged positions to the group, so standard lag tooling shows the relay's lag."""
        if self._reader is None:
            return
        todo = {sp: off for sp, off in list(self._acked.items()) if self._committed.get(sp) != off}
        if not todo:
            return
        offsets = [TopicPartition(sp.topic, sp.partition, off) for sp, off in todo.items()]
        try:
            if asynchronous:  # two calls: the client's typing tells its overloads apart by literal
                self._reader.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._reader.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # informational only: resumption never reads these offsets
            log.warning("could not commit group offsets", error=exc.args[0].str())
            return
        self._committed.update(todo)
