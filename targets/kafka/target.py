"""The Kafka target: batches committed as Kafka transactions, with resume positions beside them.

How it is exactly-once
  Each batch is one transaction, and the same transaction writes, for every source partition the
  batch carries, an entry to the positions topic (see :mod:`targets.kafka.positions`): a
  committed transaction holds its own resume point and an aborted one holds none.
  ``high_watermarks`` first initialises the transactional producer, which fences any older
  instance with the same ``transactional.id`` and aborts its open transaction, then reads the
  newest committed entries back. Retries re-send a whole batch in order, so a partition is never
  reordered. Nothing in the data topics is trusted: other writers, retention and compaction
  there cannot move a position.

The parts
  :class:`~targets.kafka.topics.TopicPreparer` checks and creates topics,
  :class:`~targets.kafka.batches.BatchBuilder` turns a batch into records (pure),
  :class:`~targets.kafka.sender.TransactionalSender` commits them; this class batches.

Threads
  The relay's thread calls ``write``; one sender thread owns the producers. ``write`` fills the
  next batch while the sender commits the previous one (double buffering): the relay keeps
  reading while a commit is on the wire, and blocks only when both buffers are full.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from relay.kafkautil import headers_of
from relay.message import Message, Offsets, RawBatch, SourcePartition, record_size
from relay.metrics import RelayMetrics
from relay.target import AckCallback, RawAckCallback, TargetError, TargetRestart
from targets.context import TargetContext
from targets.kafka import legacy, positions
from targets.kafka.batches import BatchBuilder, RawUnit, Record, Unit
from targets.kafka.positions import Entry, PositionsTopic
from targets.kafka.sender import TransactionalSender
from targets.kafka.settings import KafkaTargetConfig
from targets.kafka.topics import TopicPreparer

log = structlog.get_logger("kafka_lfs_relay.target")

_PROGRESS_INTERVAL = 1.0


@dataclass(frozen=True)
class Hooks:
    """How the LFS targets build on the Kafka target.

    ``transform`` is called in the sender thread, once per record per batch (never again on a
    retry of that batch), just before the record is produced. It may block (e.g. until an upload
    finishes), may return a record for one of ``extra_topics`` (e.g. a dead-letter topic), and
    raises :class:`TargetError` for a record that must stop the relay. A record sent to an
    extra topic counts for its source partition's position like any other.

    ``weigh`` says how many bytes a written record counts toward ``batch.max_bytes`` (default:
    its ``size``). The LFS offload target counts an offloaded record at the size of its envelope,
    so that uploads run ahead as far as the relay's byte budget allows, not one batch.
    """

    transform: Callable[[Message], Message] | None = None
    weigh: Callable[[Message], int] | None = None
    extra_topics: tuple[str, ...] = ()


class KafkaTarget:
    """Writes records to a Kafka cluster, one transaction per batch. See the module docstring."""

    def __init__(
        self, config: KafkaTargetConfig, context: TargetContext, metrics: RelayMetrics, hooks: Hooks = Hooks()
    ) -> None:
        self._config = config
        self._batch_conf = config.batch
        self._routes = {t.source: t for t in context.topics}
        self._hooks = hooks
        self._weigh = hooks.weigh
        self._name = context.name
        self._source_partitions = context.source_partitions if context.group else None
        positions_topic = config.positions_topic_for(context.name)
        # The offset map is kept only where a target partition mirrors one source partition.
        mapped = any(t.partition == "preserve" for t in context.topics)
        self._sender = TransactionalSender(
            config, config.transactional_id or context.name, positions_topic, metrics, context.group, mapped
        )
        self._topics = TopicPreparer(
            config.cluster,
            config.create_topics,
            positions_topic,
            self._sender.on_client_error,
            self._sender.raise_if_fatal,
            context.source_configs,
            config.topic_configs,
            config.replication_factor,
        )
        self._positions = PositionsTopic(
            config.cluster, positions_topic, context.name, timeout=config.transaction_timeout + 30
        )
        self._builder = BatchBuilder(context.topics, self._topics.partitions, hooks.transform)
        # Shared between the relay thread (write/flush) and the sender thread, under _cond.
        # write() takes _lock directly: entering the Condition costs two Python calls per record.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Messages, or on the passthrough fast path RawBatches; _current_records counts records either way.
        self._current: list[Any] = []
        self._current_records = 0
        self._current_bytes = 0
        self._current_since = 0.0
        self._sending = False
        self._flush_requested = False
        self._failure: BaseException | None = None
        self._closing = False
        self._on_ack: AckCallback | None = None
        self._on_raw_ack: RawAckCallback | None = None
        self._thread: threading.Thread | None = None
        # The committed entry of every source partition this target writes (the offset map grows
        # from it), and entries read or imported at start-up that no transaction wrote yet. The
        # sender thread reads and advances them, the relay's thread adds partitions (start-up,
        # partitions found later, group assignments): always under _lock.
        self._entries: dict[SourcePartition, Entry] = {}
        self._unwritten: dict[SourcePartition, Entry] = {}
        # Read positions no record carries (see progress()), bound to the batch being filled: the
        # sender takes both together, so a position never commits before the records below it.
        self._progress: dict[SourcePartition, int] = {}
        self._progress_since = 0.0

    # -- Target protocol -----------------------------------------------------------------------
    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        """Check target topics, initialise the producers (fencing older writers), read positions back."""
        wanted = set(partitions)
        counts: dict[str, int] = {}
        for sp in wanted:
            counts[sp.topic] = max(counts.get(sp.topic, 0), sp.partition + 1)
        if self._source_partitions is not None:
            # Group mode: Kafka assigned a share of the partitions. A target topic created now
            # must get its source topic's count, not one more than the highest partition assigned
            # (too few for partition: preserve, and for good once the topic exists).
            for topic, count in self._source_partitions(sorted(counts)).items():
                counts[topic] = max(counts.get(topic, 0), count)
        self._topics.prepare(list(self._routes.values()), self._hooks.extra_topics, counts)
        sender = self._sender
        # Producers first: initialising them fences older writers and aborts their open
        # transactions, so what is read back below can no longer change under us.
        for key in {sender.key(sp) for sp in wanted}:
            sender.producer(key)
        sender.lost -= wanted
        entries = self._positions.read(wanted)
        missing = sorted(wanted - entries.keys())
        unwritten: dict[SourcePartition, Entry] = {}
        if missing and self._config.import_header_positions:
            unwritten = self._import_headers(missing)
            entries.update(unwritten)
        with self._cond:
            self._entries.update(entries)
            # Written by the sender's next transaction, with data or on their own.
            self._unwritten.update(unwritten)
            if unwritten:
                self._cond.notify_all()
        return {sp: entry.next for sp, entry in entries.items() if entry.next >= 0}

    def _import_headers(self, missing: Sequence[SourcePartition]) -> dict[SourcePartition, Entry]:
        """Positions of ``missing`` from the ``kfr-pos`` headers of earlier releases (-1 where there are none)."""
        scan: list[tuple[str, Sequence[int]]] = []
        for topic in sorted({sp.topic for sp in missing}):
            target_topic = self._routes[topic].target
            if self._sender.per_partition:
                scan.append((target_topic, [sp.partition for sp in missing if sp.topic == topic]))
            else:
                scan.append((target_topic, range(self._topics.partitions[target_topic])))
        scan += [(t, range(self._topics.partitions[t])) for t in self._hooks.extra_topics]
        found: list[dict[SourcePartition, int]] = []
        for target_topic, parts in scan:
            try:
                found += legacy.newest_positions(self._config.cluster.client_config(), target_topic, parts, 30.0)
            except legacy.TailScanError as exc:
                raise TargetError(f"target {self._config.cluster.name}: {exc}") from None
        merged = legacy.merge(found)
        imported = {sp: Entry(merged.get(sp, -1)) for sp in missing}
        taken = [f"{sp.topic}/{sp.partition}" for sp in missing if merged.get(sp, -1) >= 0]
        if taken:
            log.warning(
                "took resume positions from the kfr-pos headers of an earlier release, once; they go to the "
                "positions topic now (set target.import_header_positions: false if something else wrote them)",
                target_topics=sorted({t for t, _ in scan}),
                positions_topic=self._positions.topic,
                partitions=taken,
            )
        return imported

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
            if self._on_raw_ack is not None:
                kept = (b.only(lambda sp: sp not in gone) for b in self._current)
                self._current = [b for b in kept if b.count]
                self._current_records = sum(b.count for b in self._current)
                self._current_bytes = sum(b.size for b in self._current)
            else:
                self._current = [m for m in self._current if m.source not in gone]
                self._current_records = len(self._current)
                self._current_bytes = sum(m.size for m in self._current)
        self._sender.release(partitions)
        with self._cond:
            for sp in gone:
                self._entries.pop(sp, None)
                self._unwritten.pop(sp, None)
                self._progress.pop(sp, None)

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
            self._make_room()
            self._current.append(message)
            self._current_records += 1
            self._current_bytes += message.size if self._weigh is None else self._weigh(message)
            if self._current_records >= conf.max_records or self._current_bytes >= conf.max_bytes:
                self._cond.notify_all()

    def _make_room(self) -> None:
        """Under ``_lock``: wait while the batch being filled is full, raise what the sender raised,
        and note when a new batch begins."""
        conf = self._batch_conf
        while (
            self._failure is None
            and not self._closing
            and (self._current_records >= conf.max_records or self._current_bytes >= conf.max_bytes)
        ):
            self._cond.wait(0.5)
        self._raise_failure()
        if not self._current:
            self._current_since = time.monotonic()
            # An idle sender sleeps until notified; without this it noticed the first record
            # of a batch only at its next 0.5 s wake-up, which was most of the relay's latency.
            self._cond.notify_all()

    def progress(self, positions: Mapping[SourcePartition, int]) -> None:
        """Remember read positions beyond the last record written (filtered records, markers, a
        skipped gap); they go with the next transaction, or on their own after a second."""
        with self._lock:
            pending = self._progress
            for sp, offset in positions.items():
                if offset > pending.get(sp, -1):
                    pending[sp] = offset
            if pending and not self._progress_since:
                self._progress_since = time.monotonic()

    # -- the passthrough fast path (relay.target.BatchTarget) ----------------------------------------
    def passthrough(self, on_ack: RawAckCallback) -> str | None:
        """Take raw batches when nothing needs a Message per record: no transform, no weigh hook, no
        partitioning by key (which hashes each key in Python); else say why not."""
        if self._hooks.transform is not None or self._hooks.weigh is not None or self._hooks.extra_topics:
            return f"target {self._name}: the target transforms records (lfs, hydrate)"
        keyed = sorted(t.source for t in self._routes.values() if t.partition == "key")
        if keyed:
            return f"topics {', '.join(keyed)}: partition: key chooses a target partition per record"
        self._on_raw_ack = on_ack
        return None

    def write_batch(self, batch: RawBatch) -> None:
        """Add ``batch`` to the batch being filled, as :meth:`write` adds a record: a full batch waits
        for the sender, and a raw batch that does not fit is split, so a transaction outgrows
        ``batch.max_records`` never and ``batch.max_bytes`` by at most one record, as on the full path."""
        conf = self._batch_conf
        rest: RawBatch | None = batch
        while rest is not None:
            with self._lock:
                self._make_room()
                room = conf.max_records - self._current_records
                fits = min(room, _fitting(rest, conf.max_bytes - self._current_bytes))
                head, rest = (rest, None) if fits >= rest.count else rest.split(max(1, fits))
                self._current.append(head)
                self._current_records += head.count
                self._current_bytes += head.size
                if self._current_records >= conf.max_records or self._current_bytes >= conf.max_bytes:
                    self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every written record is committed; raises what the sender raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._failure is None and (self._current or self._sending or self._unwritten or self._progress):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.5 if remaining is None else min(0.5, remaining))
            self._flush_requested = False
            self._raise_failure()
        return True

    def close(self) -> None:
        """Stop the sender and drop the producers; what was not committed is abandoned, never half-written.

        A transaction still open is aborted if the cluster answers within a few seconds; if not,
        the next instance's ``init_transactions`` aborts it.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._config.transaction_timeout + 10)
        self._sender.close()

    # -- sender thread -----------------------------------------------------------------------
    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is None:
            return
        if isinstance(failure, TargetRestart):
            # A restart is consumed once: the relay re-reads positions and carries on.
            self._failure = None
        raise failure

    def _take_batch(self) -> tuple[list[Any], dict[SourcePartition, int]] | None:
        """The next batch and the progress bound to it, once due; None when closing."""
        with self._cond:
            while True:
                if self._closing:
                    return None
                if self._failure is None:
                    self._drop_stale_progress()
                    due_in = self._due_in()
                    if due_in <= 0:
                        batch, progress = self._current, self._progress
                        self._current, self._current_records, self._current_bytes = [], 0, 0
                        self._progress, self._progress_since = {}, 0.0
                        self._sending = True
                        self._cond.notify_all()
                        return batch, progress
                    self._cond.wait(min(due_in, 0.5))
                else:
                    self._cond.wait(0.5)

    def _due_in(self) -> float:
        """Seconds until what is pending must be sent (0 or less: now). Under ``_cond``."""
        conf = self._batch_conf
        now = time.monotonic()
        if self._current:
            full = self._current_records >= conf.max_records or self._current_bytes >= conf.max_bytes
            return 0.0 if full or self._flush_requested else conf.linger - (now - self._current_since)
        if self._unwritten or (self._progress and self._flush_requested):
            return 0.0
        if self._progress:
            # Progress alone waits: a relay whose filter drops everything must not commit a
            # transaction per poll.
            return _PROGRESS_INTERVAL - (now - self._progress_since)
        return 0.5

    def _drop_stale_progress(self) -> None:
        """Forget progress the committed entries have reached already. Under ``_cond``, sender idle."""
        if not self._progress:
            return
        entries = self._entries
        stale = [sp for sp, offset in self._progress.items() if sp in entries and entries[sp].next >= offset]
        for sp in stale:
            del self._progress[sp]
        if stale and not self._progress:
            self._progress_since = 0.0
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch, progress = taken
            try:
                if self._on_raw_ack is not None:
                    raw_acked = self._commit_raw(batch, progress)
                    del batch
                    if raw_acked:
                        self._on_raw_ack(raw_acked)
                    del raw_acked
                else:
                    acked = self._commit(batch, progress)
                    del batch  # acknowledged records must not stay alive while the next batch is awaited
                    assert self._on_ack is not None
                    if acked:
                        self._on_ack(acked)
                    del acked
            except TargetRestart as exc:
                with self._cond:
                    self._current, self._current_records, self._current_bytes = [], 0, 0
                    self._progress = {}
                    self._failure = exc
            except BaseException as exc:  # handed to the relay's thread, which stops the relay
                with self._cond:
                    self._failure = exc
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def _build(self, unit: Unit, early: Callable[[Record], None] | None = None) -> None:
        unit.records, unit.batch_next, unit.last = self._builder.build(unit, early)
        unit.built = True

    def _positions_records(
        self,
        unit: Unit | RawUnit,
        offsets: Mapping[tuple[str, int], int],
        extra: Mapping[SourcePartition, Entry],
        progress: Mapping[SourcePartition, int],
    ) -> list[tuple[bytes, bytes]]:
        """The positions records of ``unit``, with ``extra`` entries to write alongside and the
        ``progress`` bound to it; ``offsets`` holds the offset the last record of each target
        partition got. Runs in every attempt."""
        with self._cond:
            current = {sp: self._entries[sp] for sp in unit.batch_next.keys() | progress.keys() if sp in self._entries}
        self._refuse_reread(unit, current)
        moved = dict(unit.batch_next)
        for sp, offset in progress.items():
            if offset > max(moved.get(sp, -1), current[sp].next if sp in current else -1):
                moved[sp] = offset
        try:
            advanced = positions.advance(current, moved, self._mirror, offsets)
        except positions.PositionError as exc:  # a position no relay could read back: never written
            raise TargetError(f"target {self._config.cluster.name}: {exc}; refusing to commit") from None
        unit.entries = {**extra, **advanced}
        return positions.records(self._name, unit.entries)

    def _mirror(self, sp: SourcePartition) -> tuple[str, int] | None:
        """The target partition that mirrors ``sp`` (under ``partition: preserve``), else None."""
        route = self._routes[sp.topic]
        return (route.target, sp.partition) if route.partition == "preserve" else None

    def _refuse_reread(self, unit: Unit | RawUnit, current: Mapping[SourcePartition, Entry]) -> None:
        """Raise :class:`TargetError` if ``unit`` holds a record below its partition's committed position.

        Found by the chaos soak (docs/reliability.md, seed 15): after a failover to a standby that
        trailed, the reader went back to the standby's end and read records the target had already
        committed; committing them again duplicated them and wrote a position that had moved back,
        which no relay could read. Transactions commit in order, so the first record of each source
        partition in a unit is at or after the position the previous transaction committed.
        """
        first = _first_offsets(unit)
        for sp, entry in current.items():
            offset = first.get((sp.topic, sp.partition))
            if offset is not None and offset < entry.next:
                raise TargetError(
                    f"target {self._config.cluster.name}: {sp.topic}/{sp.partition}: records from offset {offset} "
                    f"were read again below the committed position {entry.next} (a source that trails the relay?); "
                    "refusing to commit them twice"
                )

    def _committed(self, unit: Unit | RawUnit) -> None:
        """``unit`` committed: its entries are the current ones now."""
        with self._cond:
            self._entries.update(unit.entries)
            for sp, entry in unit.entries.items():
                if self._unwritten.get(sp) is entry:
                    del self._unwritten[sp]

    def _commit(self, batch: Sequence[Message], progress: Mapping[SourcePartition, int]) -> list[Message]:
        """Commit ``batch`` (with its ``progress``, and entries still unwritten), one transaction per
        producer, each retried whole.

        Returns the records now durable. Only in group mode can that be fewer than the batch:
        records of partitions this instance lost (fenced by their new owner) are abandoned.
        """
        sender = self._sender
        with self._cond:
            unwritten = dict(self._unwritten)
        # Only a transform can keep a record waiting (for its fetch or upload); without one,
        # producing early measured 12% slower on small records.
        early = self._hooks.transform is not None
        if not sender.per_partition and not sender.lost:
            unit = Unit(batch)
            records = partial(self._positions_records, extra=unwritten, progress=progress)
            if sender.commit(None, unit, self._build, early, records):
                self._committed(unit)
                return [rec[0] for rec in unit.records]
            return []
        # Group mode: one transaction per owned source partition, so the whole batch is built first.
        whole = Unit(batch)
        self._build(whole)
        units: dict[SourcePartition | None, list[Record]] = {}
        for rec in whole.records:
            source = rec[0].source
            if source not in sender.lost:
                units.setdefault(sender.key(source), []).append(rec)
        for sp in unwritten.keys() | progress.keys():
            if sp not in sender.lost:
                units.setdefault(sender.key(sp), [])
        with self._cond:
            for sp in unwritten.keys() & sender.lost:  # fenced: their new owner writes them
                self._unwritten.pop(sp, None)
        acked: list[Message] = []
        for key, unit_records in units.items():
            unit = Unit((), unit_records)
            own = {sp: e for sp, e in unwritten.items() if sender.key(sp) == key}
            moved = {sp: off for sp, off in progress.items() if sender.key(sp) == key}
            if sender.commit(
                key, unit, self._build, False, partial(self._positions_records, extra=own, progress=moved)
            ):
                self._committed(unit)
                acked.extend(rec[0] for rec in unit_records)
        return acked

    def _commit_raw(self, batch: Sequence[RawBatch], progress: Mapping[SourcePartition, int]) -> list[RawBatch]:
        """:meth:`_commit` on the fast path: the raw batches (or, in group mode, their parts) now durable."""
        sender = self._sender
        with self._cond:
            unwritten = dict(self._unwritten)
        cluster = batch[0].cluster if batch else ""
        if not sender.per_partition and not sender.lost:
            unit = self._builder.raw_unit(batch)
            records = partial(self._positions_records, extra=unwritten, progress=progress)
            if sender.commit_raw(None, unit, records, cluster):
                self._committed(unit)
                return list(batch)
            return []
        # Group mode: one transaction per owned source partition.
        owned = {sp for b in batch for sp in b.parts if sp not in sender.lost}
        owned |= (unwritten.keys() | progress.keys()) - sender.lost
        with self._cond:
            for sp in unwritten.keys() & sender.lost:  # fenced: their new owner writes them
                self._unwritten.pop(sp, None)
        done: set[SourcePartition] = set()
        for sp in owned:
            unit = self._builder.raw_unit(batch, only=sp)
            own = {s: e for s, e in unwritten.items() if s == sp}
            moved = {s: off for s, off in progress.items() if s == sp}
            records = partial(self._positions_records, extra=own, progress=moved)
            if sender.commit_raw(sender.key(sp), unit, records, cluster):
                self._committed(unit)
                done.add(sp)
        kept = (b.only(done.__contains__) for b in batch)
        return [b for b in kept if b.count]


def build(
    config: KafkaTargetConfig, context: TargetContext, metrics: RelayMetrics, hooks: Hooks = Hooks()
) -> KafkaTarget:
    """The one place a Kafka target is made: for ``type: kafka``, and inside ``lfs`` and ``hydrate``."""
    return KafkaTarget(config, context, metrics, hooks)


def _fitting(batch: RawBatch, room: int) -> int:
    """How many of ``batch``'s records, in its order, weigh ``room`` bytes or less (at least one)."""
    if batch.size <= room:
        return batch.count
    # Only where max_bytes cuts a transaction (large records): one Python step per record of this batch.
    fits = 0
    for recs in batch.parts.values():
        for rec in recs:
            room -= record_size(rec.key(), rec.value(), headers_of(rec))
            if room < 0:
                return max(1, fits)
            fits += 1
    return max(1, fits)


def _first_offsets(unit: Unit | RawUnit) -> dict[tuple[str, int], int]:
    """The offset of the first record of each source partition in ``unit``."""
    first: dict[tuple[str, int], int] = {}
    if isinstance(unit, RawUnit):
        for _, _, lists in unit.runs:
            head = next((recs[0] for recs in lists if recs), None)
            if head is not None:
                first.setdefault((head.topic() or "", head.partition() or 0), head.offset() or 0)
        return first
    wanted = len(unit.batch_next)
    for msg in (record[0] for record in unit.records) if unit.built else unit.messages:
        key = (msg.source_topic, msg.source_partition)
        if key not in first:
            first[key] = msg.source_offset
            if len(first) == wanted:
                break
    return first
