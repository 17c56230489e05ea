"""Partitions the relay cannot read now: positions outside the active source's log.

The source consumer runs with ``auto.offset.reset: error``, so a position outside the log is an
error event for that partition, never a silent jump. :class:`SourceGate` finds out what it is,
from the partition's watermarks on the active source: below the log start, a *gap* (``on_gap``:
stop, or skip to the log start and count the loss); above the end, the source *trails* the
relay's position. A partition the active source has not reached (after a failover, or found
trailing) *waits*: it is not read until that source's end offset reaches the position and the
record before it matches what the relay read there (verified on a consumer of its own, so the
other partitions keep flowing). Waiting partitions are published to the pool, whose decision
switches to a healthy source that holds every position.

Every method runs on the relay's thread; the verification runs on a thread of its own and is
only looked at from here (:meth:`SourceGate.poll`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import structlog
from confluent_kafka import KafkaError, KafkaException

from relay.failover import RelayView
from relay.health import RelayHealth
from relay.kafkautil import client_error_text
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.readpositions import ReadPositions
from relay.settings import TopicConfig
from relay.sourcepool import Fingerprint, SourceError, SourcePool, SourceReader, Verification, truncation_end

log = structlog.get_logger("kafka_lfs_relay.relay")

# "Still waiting" lines while a source has not reached the relay's position: the first after this
# many seconds, then twice as long each time, up to the last.
_WAIT_LOG_FIRST = 10.0
_WAIT_LOG_MAX = 300.0
# An offset error on a position the watermarks say is inside the log is retried at once, but not
# twice within this many seconds (then the partition waits for the next health check).
_RESEEK_AGAIN = 5.0


class SourceTopicRecreated(Exception):
    """A topic of the active source was deleted and created again under the running relay (a new topic id)."""

    def __init__(self, cluster: str, topic: str, old: str, new: str) -> None:
        super().__init__(f"source {cluster}: topic {topic} was deleted and created again (topic id {old} -> {new})")
        self.topic = topic


class SourceGate:
    """Which partitions wait for the active source, and when they may be read again. See the module docstring.

    ``reads`` are the relay's read positions (and the record read last per partition), shared,
    not copied: a gap skipped moves a position there; ``reader`` gives the active source's reader.
    """

    def __init__(
        self,
        pool: SourcePool,
        routes: Mapping[str, TopicConfig],
        reads: ReadPositions,
        reader: Callable[[], SourceReader | None],
        metrics: RelayMetrics,
        health: RelayHealth,
    ) -> None:
        self._pool = pool
        self._routes = routes
        self._reads = reads
        self._reader = reader
        self._metrics = metrics
        self._health = health
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

    def poll(self) -> None:
        """Take the result of a verification that finished (each pass of the relay's loop)."""
        if self._verification is not None and self._verification.done():
            self.verified()

    def switched(self, old: str) -> None:
        """The relay now reads from another source: every partition waits until that one holds its position
        and, where the relay read something, the record before it matches; those that are ready go on at once."""
        self._metrics.source_catching_up.labels(source=old).set(0)
        self._health.catching_up(None)
        self._short = set()
        self._seen_end.clear()
        self._unverified = self._reads.fingerprinted() if self._pool.config.verify_on_switch else set()
        self._waiting = dict.fromkeys(self._reads.owned(), time.monotonic())
        self.gate()

    def reset(self) -> None:
        """The target restarted and positions are read again: nothing waits any more."""
        self.cancel()
        self._waiting.clear()
        self._unverified.clear()
        self._seen_end.clear()
        if self._short:
            self._caught_up(self._pool.active)

    def forget(self, partitions: Sequence[SourcePartition]) -> None:
        """``partitions`` are no longer read (group mode: revoked or lost)."""
        for sp in partitions:
            self._waiting.pop(sp, None)
            self._short.discard(sp)
            self._unverified.discard(sp)
            self._seen_end.pop(sp, None)

    def out_of_range(self, sp: SourcePartition, err: KafkaError | None = None) -> None:
        """The reader's position on ``sp`` is outside the active source's log; librdkafka stopped fetching it.

        ``err`` is the consumer's error event: a log truncation it reports is handled under
        ``on_gap`` (see :meth:`_truncated`).
        """
        reader = self._reader()
        assert reader is not None
        pos = self._reads.get(sp)
        if pos < 0:
            # Nothing relayed yet: read from whatever the log's beginning is now; never a gap.
            reader.reposition({sp: -1})
            return
        try:
            low, high = reader.watermarks(sp, self._pool.config.request_timeout * 5)
        except KafkaException as exc:
            log.warning(
                "position outside the source log, and its bounds could not be read; waiting",
                source=reader.cluster.name,
                topic=sp.topic,
                partition=sp.partition,
                position=pos,
                error=client_error_text(exc.args[0].str()),
            )
            self.wait([sp], seen_end=-1)
            self._pool.check_now()
            return
        reported = truncation_end(err) if err is not None else None
        end = high if reported is None or reported < 0 else min(reported, high)
        if pos < low or pos > end:
            self._raise_if_recreated(sp, reader.cluster.name)
        recent = time.monotonic() - self._reseeked.get(sp, -_RESEEK_AGAIN) < _RESEEK_AGAIN
        if pos < low:
            self._gap(sp, pos, low)
        elif end < pos and (reported is not None or (recent and self._read_here(sp, reader.cluster.name))):
            self._truncated(sp, pos, end)
        elif pos > high and not self._read_here(sp, reader.cluster.name):
            # The source trails the relay (or lost records already relayed): wait for it, and verify
            # the record before the position again once it is back, as after a failover.
            if self._reads.fingerprint(sp) is not None and self._pool.config.verify_on_switch:
                self._unverified.add(sp)
            self.wait([sp], seen_end=high)
        elif recent:
            self.wait([sp], seen_end=pos - 1)
        else:
            # The log holds the position, or the relay read the record before it from this very
            # source, which now ends below it: read it again at once, and a second out-of-range
            # soon after is a truncation (a passing error reads on).
            self._reseeked[sp] = time.monotonic()
            log.warning(
                "position reported outside the source log; reading it again",
                source=reader.cluster.name,
                topic=sp.topic,
                partition=sp.partition,
                position=pos,
                log_start=low,
                log_end=high,
            )
            reader.reposition({sp: pos})

    def _raise_if_recreated(self, sp: SourcePartition, source: str) -> None:
        """Raise :class:`SourceTopicRecreated` if ``sp``'s topic has a new id on ``source``: a topic deleted and
        created again is new data, not a gap or a truncation of the old one."""
        change = self._pool.recreated(sp.topic)
        if change is not None:
            raise SourceTopicRecreated(source, sp.topic, *change)

    def _read_here(self, sp: SourcePartition, source: str) -> bool:
        """Whether the relay read the record before ``sp``'s position from ``source`` (this run, since a switch)."""
        fp = self._reads.fingerprint(sp)
        return fp is not None and fp.source == source

    def _truncated(self, sp: SourcePartition, pos: int, end: int) -> None:
        """The source's log of ``sp`` now ends at ``end``, below the position ``pos`` the relay read from it.

        The records at ``[end, pos)`` that the relay copied are gone from the source (an unclean
        leader election), and the records the source writes next take their offsets: records the
        relay will not read, as a retention gap's. ``on_gap: fail`` stops; ``skip`` goes on from
        ``pos`` once the source reaches it, and counts ``pos - end`` in ``records_lost_total``.
        """
        reader = self._reader()
        assert reader is not None
        cluster = reader.cluster.name
        where = f"source {cluster}: topic {sp.topic} partition {sp.partition}"
        if self._routes[sp.topic].on_gap == "fail":
            raise SourceError(
                f"{where}: the log was truncated to offset {end}, below the relay's position {pos} (an unclean "
                f"leader election?); the records the source writes at offsets [{end}, {pos}) again would not be "
                f"relayed, so on_gap is fail and the relay stops (on_gap: skip would go on from offset {pos} "
                "once the source reaches it and count them in records_lost_total)"
            )
        log.error(
            "the source's log was truncated below the relay's position; the records it writes at these offsets "
            "again are skipped (on_gap: skip)",
            source=cluster,
            topic=sp.topic,
            partition=sp.partition,
            missing=f"[{end}, {pos})",
            records=pos - end,
        )
        self._metrics.records_lost.labels(reason="truncation", topic=sp.topic, partition=str(sp.partition)).inc(
            pos - end
        )
        # The record before the position is gone, and the one that will be there is another.
        self._reads.forget_fingerprints([sp])
        self._unverified.discard(sp)
        self.wait([sp], seen_end=end)

    def _gap(self, sp: SourcePartition, pos: int, low: int) -> None:
        """Offsets ``[pos, low)`` of ``sp`` were deleted from the active source before they were relayed."""
        reader = self._reader()
        assert reader is not None
        cluster = reader.cluster.name
        where = f"source {cluster}: topic {sp.topic} partition {sp.partition}: offsets [{pos}, {low})"
        if self._routes[sp.topic].on_gap == "fail":
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
        self._metrics.records_lost.labels(reason="retention", topic=sp.topic, partition=str(sp.partition)).inc(
            low - pos
        )
        self._reads.skip(sp, low)
        reader.reposition({sp: low})

    def wait(self, partitions: Sequence[SourcePartition], seen_end: int | None = None) -> None:
        """Stop reading ``partitions`` until the active source holds their positions (see :meth:`_gate`).

        ``seen_end``: the end offset just seen for them; only a later health check can let them go.
        """
        now = time.monotonic()
        for sp in partitions:
            self._waiting.setdefault(sp, now)
            if seen_end is not None:
                self._seen_end[sp] = (now, seen_end)
        self.gate()

    def gate(self) -> None:
        """Let waiting partitions go once the active source holds their positions and verified them.

        Runs about once a second, after a switch and after a verification. Partitions the active
        source has not reached are published to the pool (a source holding them is switched to).
        """
        reader = self._reader()
        if reader is None:
            return
        if not self._waiting:
            if self._short:
                self._caught_up(reader.cluster.name)
            return
        health = self._pool.latest(reader.cluster.name)
        ends = health.end_offsets if health is not None and health.ok else {}
        busy = self._verification.fingerprints if self._verification is not None else {}
        short: dict[SourcePartition, int] = {}
        check: dict[SourcePartition, Fingerprint] = {}
        ready: dict[SourcePartition, int] = {}
        for sp in self._waiting:
            pos = self._reads.get(sp)
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
            elif sp in self._unverified and (fp := self._reads.fingerprint(sp)) is not None:
                check[sp] = fp
            else:
                ready[sp] = pos
        for sp in ready:
            del self._waiting[sp]
            self._unverified.discard(sp)
        reader.reposition(ready)
        if check and self._verification is None:
            self._verification = Verification(reader.cluster, check, self._pool.config.request_timeout * 5)
        self._report_short(reader.cluster.name, short)

    def _report_short(self, source: str, short: Mapping[SourcePartition, int]) -> None:
        """Publish, count and log the partitions the active source has not reached."""
        if not short:
            if self._short:
                self._caught_up(source)
            return
        new = set(short) - self._short
        self._short = set(short)
        self._metrics.source_catching_up.labels(source=source).set(len(short))
        self._health.catching_up(f"{len(short)} partition(s) wait for source {source} to reach the relay's position")
        self._pool.publish(RelayView(self._reads.snapshot(), frozenset(short)))
        where = sorted(
            f"{sp.topic}/{sp.partition}: end {end}, position {self._reads.get(sp)}" for sp, end in short.items()
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
        self._metrics.source_catching_up.labels(source=source).set(0)
        self._health.catching_up(None)
        self._pool.publish(RelayView())

    def verified(self) -> None:
        """A verification finished: let matching partitions go, stop on a mismatch, retry the rest later."""
        done, self._verification = self._verification, None
        reader = self._reader()
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
        self.gate()

    def cancel(self) -> None:
        if self._verification is not None:
            self._verification.cancel()
            self._verification = None
