"""The Kafka target: runs committed as Kafka transactions, with resume positions beside them.

How it is exactly-once
  Each batch is one transaction (in group mode, one per source partition), and the same
  transaction writes, for every source partition it moves, an entry to the positions topic (see
  :mod:`targets.kafka.positions`): a committed transaction holds its own resume point and an
  aborted one holds none. ``high_watermarks`` first initialises the transactional producer, which
  fences any older instance with the same ``transactional.id`` and aborts its open transaction,
  then reads the newest committed entries back. Retries re-send a whole transaction in order, so a
  partition is never reordered. Nothing in the data topics is trusted: other writers, retention
  and compaction there cannot move a position.

The path of a run
  ``write_runs`` (the relay's thread) gives each run to the transform, if there is one (the LFS
  offload, hydration: :mod:`targets.kafka.transform`), and adds it to the batch being filled
  (:mod:`targets.kafka.accumulator`). The sender's thread (:mod:`targets.kafka.sender`) pulls the
  batch once it is due, as plans (:mod:`targets.kafka.plan`), executes each as a transaction and
  reports the outcome; the accumulator then acknowledges the runs to the relay.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import structlog

from relay.errors import RelayError
from relay.message import Offsets, SourcePartition
from relay.metrics import RelayMetrics
from relay.run import Run
from relay.selection import Routes
from relay.settings import TopicConfig
from relay.target import Acks, TargetError
from targets.context import TargetContext
from targets.kafka import identity, legacy
from targets.kafka.accumulator import Accumulator
from targets.kafka.plan import Planning
from targets.kafka.positions import Entry, PositionsTopic
from targets.kafka.provenance import LoopGuard, Provenance
from targets.kafka.sender import TransactionalSender
from targets.kafka.settings import KafkaTargetConfig
from targets.kafka.topics import TopicPreparer
from targets.kafka.transform import Transform

log = structlog.get_logger("kafka_lfs_relay.target")


class KafkaTarget:
    """Writes runs to a Kafka cluster, one transaction per batch. See the module docstring.

    ``transform`` changes what the records become (the ``lfs`` and ``hydrate`` targets); with
    ``context.messages`` every record is built as a ``Message`` before it is produced.
    """

    def __init__(
        self,
        config: KafkaTargetConfig,
        context: TargetContext,
        metrics: RelayMetrics,
        transform: Transform | None = None,
    ) -> None:
        self._config = config
        # Routes grow while running (live discovery): the sender's thread plans with them meanwhile.
        self._routes = Routes(context.topics)
        self._provenance = Provenance(config.cluster, context.sources) if context.provenance else None
        self._transform = transform
        self._extra_topics = transform.extra_topics if transform is not None else ()
        self._source_partitions = context.source_partitions if context.group else None
        self._source_topic_ids = context.source_topic_ids
        self._metrics = metrics
        positions_topic = config.positions_topic_for(context.name)
        self._sender = TransactionalSender(
            config, config.transactional_id or context.name, context.name, positions_topic, metrics, context.group
        )
        if self._provenance is not None:
            self._sender.stamps = self._provenance.stamps
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
        planning = Planning(
            self._routes, self._topics.partitions, transform, context.messages, context.group, config.cluster.name
        )
        self._accumulator = Accumulator(config.batch, planning)
        self._thread: threading.Thread | None = None

    @property
    def transform(self) -> Transform | None:
        """What changes the records before they are produced (the ``lfs`` and ``hydrate`` targets), if anything."""
        return self._transform

    @property
    def loop_guard(self) -> LoopGuard | None:
        """The filter that drops records whose provenance names this target's cluster (``provenance``), if on."""
        return LoopGuard(self._provenance) if self._provenance is not None else None

    def add_routes(self, routes: Sequence[TopicConfig]) -> None:
        """Source topics selected while running (:class:`relay.target.RouteTaker`); their partitions follow."""
        self._routes.add(routes)
        if self._transform is not None:
            self._transform.routes_added([r.target for r in routes])

    @property
    def config(self) -> KafkaTargetConfig:
        """The settings the target was built with."""
        return self._config

    # -- the target contract (relay.target.RunTarget) ---------------------------------------------
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
        self._topics.prepare(list(self._routes.values()), self._extra_topics, counts)
        if self._transform is not None:
            self._transform.topics_ready()
        if self._provenance is not None:
            self._provenance.ready()
        sender = self._sender
        # Producers first: initialising them fences older writers and aborts their open
        # transactions, so what is read back below can no longer change under us.
        for key in {sender.key(sp) for sp in wanted}:
            sender.producer(key)
        if self._topics.grown:
            sender.refresh_metadata(sorted(self._topics.grown))
            self._topics.grown.clear()
        sender.lost -= wanted
        entries, unwritten = self._read_entries(wanted)
        current, rewritten = identity.reconcile(
            entries, wanted, self._routes, self._topic_ids(wanted), sender.transactional_id, self._recreated
        )
        unwritten = {**{sp: current[sp] for sp in unwritten}, **rewritten}
        # Unwritten entries are written by the sender's next transaction, with data or on their own.
        self._accumulator.resumed(current, unwritten)
        return {sp: entry.next for sp, entry in current.items() if entry.next >= 0}

    def _read_entries(
        self, wanted: set[SourcePartition]
    ) -> tuple[dict[SourcePartition, Entry], dict[SourcePartition, Entry]]:
        """The entries of ``wanted`` (and the positions imported from headers, to be written), after refusing
        another writer's entries and, unless ``on_existing_data: append``, target records nobody accounts for."""
        topics = {sp.topic for sp in wanted}
        mine = {sp: e for sp, e in self._positions.read(None).items() if sp.topic in topics}
        where = f"target {self._config.cluster.name}: positions topic {self._positions.topic!r}"
        identity.check_writers(mine, self._sender.transactional_id, self._positions.name, where)
        entries = {sp: e for sp, e in mine.items() if sp in wanted}
        missing = sorted(wanted - entries.keys())
        unwritten: dict[SourcePartition, Entry] = {}
        if missing and self._config.import_header_positions:
            unwritten = self._import_headers(missing)
            entries.update({sp: e for sp, e in unwritten.items() if e.next >= 0})
            missing = sorted(wanted - entries.keys())
        if missing and self._config.on_existing_data == "fail":
            has = {sp.topic for sp in mine}
            identity.refuse_existing(
                self._config.cluster, self._positions.name, missing, has, self._routes, self._topics.partitions
            )
        return entries, unwritten

    def _topic_ids(self, wanted: set[SourcePartition]) -> identity.TopicIds:
        topics = sorted({sp.topic for sp in wanted})
        target = self._topics.topic_ids(sorted({self._routes[t].target for t in topics}))
        if self._source_topic_ids is None:
            return identity.TopicIds(None, {}, target)
        try:
            cluster, source = self._source_topic_ids(topics)
        except RelayError as exc:
            # The source answered a moment ago (its partitions were counted): a hiccup must not stop the
            # relay, and an entry is then trusted as one without ids is.
            log.warning("could not read the source topic ids; a recreated source topic is not recognised now",
                        error=str(exc))  # fmt: skip
            return identity.TopicIds(None, {}, target)
        return identity.TopicIds(cluster, source, target)

    def _recreated(self, topic: str) -> None:
        self._metrics.source_topic_recreated.labels(topic=topic).inc()

    def _import_headers(self, missing: Sequence[SourcePartition]) -> dict[SourcePartition, Entry]:
        """Positions of ``missing`` from the ``kfr-pos`` headers of earlier releases (-1 where there are none)."""
        scan: list[tuple[str, int]] = []
        for topic in sorted({sp.topic for sp in missing}):
            target_topic = self._routes[topic].target
            if self._sender.per_partition:
                scan += [(target_topic, sp.partition) for sp in missing if sp.topic == topic]
            else:
                scan += [(target_topic, p) for p in range(self._topics.partitions[target_topic])]
        scan += [(t, p) for t in self._extra_topics for p in range(self._topics.partitions[t])]
        try:
            found = legacy.newest_positions(self._config.cluster.client_config(), list(dict.fromkeys(scan)), 30.0)
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
        queued runs are abandoned, never acknowledged, and their producers closed.
        """
        if flush:
            self.flush()
        gone = set(partitions)
        self._accumulator.released(gone)
        self._sender.release(partitions)

    def start(self, acks: Acks) -> None:
        """Start the transform's work and the sender's thread."""
        self._accumulator.start(acks)
        if self._transform is not None:
            self._transform.start()
        self._thread = threading.Thread(
            target=self._sender.run, args=(self._accumulator,), name="kafka-target-sender", daemon=True
        )
        self._thread.start()

    def write_runs(self, runs: Sequence[Run], more: bool) -> None:
        """Add ``runs`` to the batch being filled (after the transform began their work); blocks while it is full."""
        accumulator, transform = self._accumulator, self._transform
        provenance = self._provenance
        if provenance is not None:
            for cluster in {run.cluster for run in runs} - provenance.stamps.keys():
                provenance.stamp(cluster)  # resolved before the sender can plan a run read from it
        if transform is None:
            accumulator.add([(run, None) for run in runs], more)
            return
        accumulator.flush(0)  # a failure is raised before any work begins for runs that would be dropped
        begun = [transform.begin(run) for run in runs]
        try:
            accumulator.add(begun, more)
        except BaseException:
            # The sender failed after the check above: the work just begun belongs to runs the relay
            # reads again, like all the work the failure dropped.
            transform.drop()
            raise

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every run written is committed; raises what the sender raised."""
        return self._accumulator.flush(timeout)

    def close(self) -> None:
        """Stop the sender and drop the producers; what was not committed is abandoned, never half-written.

        A transaction still open is aborted if the cluster answers within a few seconds; if not,
        the next instance's ``init_transactions`` aborts it. The transform's work in flight is
        abandoned first, so a sender that waits for an upload or a fetch is released at once.
        """
        self._accumulator.close()
        if self._transform is not None:
            self._transform.drop()
        if self._thread is not None:
            self._thread.join(timeout=self._config.transaction_timeout + 10)
        self._sender.close()
        if self._transform is not None:
            self._transform.close()


def build(
    config: KafkaTargetConfig, context: TargetContext, metrics: RelayMetrics, transform: Transform | None = None
) -> KafkaTarget:
    """The one place a Kafka target is made: for ``type: kafka``, and inside ``lfs`` and ``hydrate``."""
    return KafkaTarget(config, context, metrics, transform)
