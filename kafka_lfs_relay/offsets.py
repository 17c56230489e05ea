"""Moving consumer groups to the target: the translation ``offsets translate|sync`` prints and commits
(:mod:`kafka_lfs_relay.offsets_command`), and the background sync (``group_offsets``).

A group's committed offsets are read on the source clusters of the config; each is translated
through the relay's offset map (:mod:`targets.kafka.groups`: rounded down to a batch boundary,
never past) into an offset of the mirrored target partition; ``sync`` commits those to the same
group on the target cluster, refusing while the group has members there.

Which source a group's offsets come from
  Every source of the config is asked (``--source`` names one instead). Where the group has
  committed offsets on several sources, each partition takes the lowest: the sources hold the same
  records at the same offsets, so the lowest position re-reads what the group on the other
  cluster had not consumed yet, while the highest could skip what a consumer of the lower one
  never saw. A source that does not answer is reported and left out: when the cluster the
  consumers used is down, its offsets are gone with it, which is what the background sync
  (``group_offsets``) is for: it commits translated offsets to the target while the source is up.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from confluent_kafka import ConsumerGroupTopicPartitions

from kafka_lfs_relay.admin import Admins, error_text, selected_routes
from kafka_lfs_relay.config import RelayConfig
from relay.errors import RelayError
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.settings import ClusterConfig, TopicConfig
from targets.kafka import KafkaTargetConfig
from targets.kafka.groups import PositionsTail, TargetGroups, Translation, translate_offset
from targets.kafka.positions import Entry

log = structlog.get_logger("kafka_lfs_relay.offsets")


def admin_timeout(config: RelayConfig) -> float:
    """How long one admin request may take: a source that does not answer costs this much once per group."""
    return max(5.0, 5 * config.source_pool.request_timeout)


PositionsReader = Callable[[Collection[SourcePartition]], Mapping[SourcePartition, Entry]]


class OffsetsError(RelayError):
    """A group cannot be translated or synced; the message says why."""

    code = "offsets"


class NoOffsets(OffsetsError):
    """The group has committed nothing on the relay's topics on any source that answered."""


@dataclass(frozen=True)
class SourceOffsets:
    """A group's committed offsets on the sources: the lowest per partition, and where it came from."""

    offsets: dict[SourcePartition, tuple[int, str]]
    partitions: dict[str, int]
    """Partition count of each source topic (from the first source that answered)."""
    answered: list[str]
    unreachable: dict[str, str]


def read_source_offsets(
    sources: Sequence[ClusterConfig], group: str, topics: Collection[str], timeout: float, admins: Admins
) -> SourceOffsets:
    """``group``'s committed offsets on ``topics``, asked of every source (see the module docstring)."""
    offsets: dict[SourcePartition, tuple[int, str]] = {}
    partitions: dict[str, int] = {}
    answered: list[str] = []
    unreachable: dict[str, str] = {}
    for cluster in sources:
        admin = admins(cluster)
        try:
            res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[
                group
            ].result(timeout=timeout + 5)
            if not partitions:
                md = admin.list_topics(timeout=timeout)
                partitions = {t: len(md.topics[t].partitions) for t in topics if t in md.topics}
        except Exception as exc:  # any failure of a source is reported, and that source left out
            unreachable[cluster.name] = error_text(exc)
            continue
        answered.append(cluster.name)
        for tp in res.topic_partitions or []:
            if tp.topic not in topics or tp.offset < 0 or tp.error is not None:
                continue
            sp = SourcePartition(tp.topic, tp.partition)
            if sp not in offsets or tp.offset < offsets[sp][0]:
                offsets[sp] = (tp.offset, cluster.name)
    return SourceOffsets(offsets, partitions, answered, unreachable)


@dataclass(frozen=True)
class GroupReport:
    """What translating one group found, partition by partition."""

    group: str
    translations: list[Translation]
    origin: dict[SourcePartition, str]
    """The source cluster each committed offset came from."""
    uncommitted: list[SourcePartition] = field(default_factory=list)
    """Partitions of ``partition: preserve`` routes the group has committed nothing for: left alone."""
    no_target: list[SourcePartition] = field(default_factory=list)
    """Partitions whose target partition does not exist (yet): not translated."""
    untranslatable: dict[str, int] = field(default_factory=dict)
    """Source topics under ``key`` or a fixed partition, with the number of partitions the group committed."""
    answered: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def reread(self) -> int:
        """The most records a consumer switching now re-reads, over all partitions."""
        return sum(t.reread for t in self.translations)


class GroupTranslator:
    """Translates groups for the relay of ``config``: source offsets, the positions topic, the target's logs."""

    def __init__(
        self,
        config: RelayConfig,
        kafka: KafkaTargetConfig,
        positions: PositionsReader,
        target: TargetGroups,
        timeout: float,
    ) -> None:
        self.config = config
        self.kafka = kafka
        self.positions = positions
        self.target = target
        self.timeout = timeout
        self.routes: dict[str, TopicConfig] = {r.source: r for r in config.topics}
        self.admins = Admins()

    def translate(self, group: str, sources: Sequence[ClusterConfig] | None = None) -> GroupReport:
        """Translate ``group``'s offsets, read on ``sources`` (default: every source of the config).

        Raises :class:`OffsetsError` when no source answers, or none holds an offset of the group
        on the relay's topics (a misspelt group must not look like a group with nothing to move).
        """
        asked = list(sources if sources is not None else self.config.sources)
        if self.config.rules.dynamic:  # the topics the patterns select now, named by the target template
            self.routes = {r.source: r for r in selected_routes(self.config, self.admins, self.timeout)}
        found = read_source_offsets(asked, group, list(self.routes), self.timeout, self.admins)
        if not found.answered:
            reasons = "; ".join(f"{name}: {why}" for name, why in found.unreachable.items())
            raise OffsetsError(f"no source cluster answered for group {group!r} ({reasons})")
        if not found.offsets:
            raise NoOffsets(
                f"group {group!r} has no committed offsets for topic(s) {', '.join(self.routes)} on source(s) "
                f"{', '.join(found.answered)}"
                + (f" (no answer from {', '.join(found.unreachable)})" if found.unreachable else "")
            )
        preserved = {sp: off for sp, (off, _) in found.offsets.items() if self.routes[sp.topic].partition == "preserve"}
        untranslatable: dict[str, int] = {}
        for sp in found.offsets:
            if sp not in preserved:
                untranslatable[sp.topic] = untranslatable.get(sp.topic, 0) + 1
        entries = self.positions(set(preserved)) if preserved else {}
        _refuse_before_recreation(group, preserved, entries, self.routes)
        wanted = {(self.routes[sp.topic].target, sp.partition) for sp in preserved}
        ranges = self.target.log_range(wanted)
        translations: list[Translation] = []
        no_target: list[SourcePartition] = []
        for sp in sorted(preserved, key=lambda s: (s.topic, s.partition)):
            target_topic = self.routes[sp.topic].target
            log_range = ranges.get((target_topic, sp.partition))
            if log_range is None:
                no_target.append(sp)
                continue
            translations.append(translate_offset(sp, target_topic, entries.get(sp), preserved[sp], *log_range))
        uncommitted = [
            SourcePartition(r.source, p)
            for r in self.routes.values()
            if r.partition == "preserve"
            for p in range(found.partitions.get(r.source, 0))
            if SourcePartition(r.source, p) not in found.offsets
        ]
        return GroupReport(
            group,
            translations,
            {sp: origin for sp, (_, origin) in found.offsets.items()},
            uncommitted,
            no_target,
            untranslatable,
            found.answered,
            found.unreachable,
        )


def _refuse_before_recreation(
    group: str,
    committed: Mapping[SourcePartition, int],
    entries: Mapping[SourcePartition, Entry],
    routes: Mapping[str, TopicConfig],
) -> None:
    """Raise :class:`OffsetsError` if the group committed, on a partition, below where the offset map of a
    recreated target topic begins: the records it has not consumed before that point are not on the target."""
    before = [
        (sp, off, entry.since)
        for sp, off in sorted(committed.items(), key=lambda i: (i[0].topic, i[0].partition))
        if (entry := entries.get(sp)) is not None and entry.since is not None and off < entry.since
    ]
    if not before:
        return
    sp, off, since = before[0]
    more = f" (and {len(before) - 1} more partition(s))" if len(before) > 1 else ""
    raise OffsetsError(
        f"group {group!r} committed {sp.topic}/{sp.partition} at source offset {off}, but target topic "
        f"{routes[sp.topic].target!r} was recreated when the relay was at {since}{more}: records from {off} to "
        f"{since} are not on the target, so no target offset stands for {off}; not translated"
    )


def commit_metadata(config: RelayConfig) -> str:
    """The metadata committed with translated offsets: who wrote them."""
    return f"kafka-lfs-relay {config.name}: translated from the source's committed offset"


# -- the background sync -----------------------------------------------------------------------------
def sync_moves(
    translations: Sequence[Translation], current: Mapping[tuple[str, int], tuple[int, str]], ours: str
) -> dict[tuple[str, int], int]:
    """The target offsets the background sync commits: (topic, partition) -> offset.

    ``current`` is what the target group holds, with the metadata committed with it; ``ours`` the
    metadata the sync commits with. A partition with nothing committed, or behind its translation,
    moves forward; one ahead moves back only if the sync committed it (the source group was
    rewound), never when a consumer did (it read that far on the target).
    """
    moves: dict[tuple[str, int], int] = {}
    for t in translations:
        where = (t.target_topic, t.source.partition)
        offset, metadata = current.get(where, (-1, ours))
        if t.target > offset or (t.target < offset and metadata == ours):
            moves[where] = t.target
    return moves


class GroupOffsetSync:
    """Keeps the target's copy of every matching group at its translated position (``group_offsets``).

    Each :meth:`run_once` lists the groups on the sources, translates those matching one of
    ``patterns`` and commits them on the target, only for groups with no member there. It follows
    the source group both ways: a partition whose target offset the sync committed itself (known
    by the metadata it commits, :func:`commit_metadata`) moves forward and back with the source
    group, so a group rewound on the source for reprocessing is rewound on the target too; one a
    consumer committed on the target (after a failover) only moves forward, never back over what
    that consumer read. It runs on its own thread (:class:`kafka_lfs_relay.background.Periodic`),
    never on the relay's.
    """

    def __init__(self, config: RelayConfig, metrics: RelayMetrics, patterns: Sequence[str]) -> None:
        kafka = config.target.kafka
        assert kafka is not None
        self.config = config
        self.metrics = metrics
        self.patterns = [re.compile(p) for p in patterns]
        self.exclude = {config.group.id} if config.group is not None else set()
        self.tail = PositionsTail(
            kafka.cluster, kafka.positions_topic_for(config.name), config.name, timeout=kafka.transaction_timeout
        )
        self.timeout = admin_timeout(config)
        self.target = TargetGroups(kafka.cluster, self.timeout)
        self.translator = GroupTranslator(config, kafka, self.tail.read, self.target, self.timeout)
        self._lock = threading.Lock()

    def groups(self) -> list[str]:
        """The groups on the sources that match a pattern (the relay's own group excluded)."""
        found: set[str] = set()
        for cluster in self.config.sources:
            admin = self.translator.admins(cluster)
            try:
                listing = admin.list_consumer_groups(request_timeout=self.timeout).result(timeout=self.timeout + 5)
            except Exception as exc:  # an unreachable source is normal in a disaster; the others are asked
                log.info("source did not list its consumer groups", source=cluster.name, error=error_text(exc))
                continue
            for error in listing.errors or []:  # part of the groups (a coordinator still loading): next pass
                log.info("source listed only part of its consumer groups", source=cluster.name, error=str(error))
            for listed in listing.valid or []:
                gid = listed.group_id
                if gid not in self.exclude and any(p.fullmatch(gid) for p in self.patterns):
                    found.add(gid)
        return sorted(found)

    def run_once(self) -> None:
        """One pass over every matching group."""
        with self._lock:
            for group in self.groups():
                try:
                    outcome = self.sync(group)
                except NoOffsets:
                    outcome = "no_offsets"  # a matching group that consumes other topics
                except Exception as exc:  # one group's failure (a timeout, a refusal) leaves the others to sync
                    outcome = "error"
                    log.warning("could not sync the group's offsets to the target", group=group, error=error_text(exc))
                log.debug("group offsets sync pass", group=group, outcome=outcome)
                self.metrics.group_offsets_syncs.labels(group=group, outcome=outcome).inc()

    def sync(self, group: str) -> str:
        """Sync one group; returns the outcome (committed, unchanged, active_members); raises NoOffsets."""
        report = self.translator.translate(group)
        self.metrics.group_offsets_lag.labels(group=group).set(report.reread)
        members = self.target.active_members(group)
        if members:
            log.debug("group has members on the target; not touched", group=group, members=len(members))
            return "active_members"
        ours = commit_metadata(self.config)
        current = self.target.commits(group)
        moves = sync_moves(report.translations, current, ours)
        if not moves:
            return "unchanged"
        self.target.commit(group, moves, ours)
        log.info(
            "synced group offsets to the target",
            group=group,
            partitions=len(moves),
            moved_back=sum(1 for where, offset in moves.items() if offset < current.get(where, (-1, ""))[0]),
            reread_at_most=report.reread,
        )
        return "committed"

    def close(self) -> None:
        """Close the positions reader."""
        with self._lock:
            self.tail.close()
