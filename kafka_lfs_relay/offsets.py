"""Moving consumer groups to the target: ``kafka-lfs-relay offsets translate|sync`` and the background sync.

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

import argparse
import json
import re
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import ConsumerGroupTopicPartitions

from kafka_lfs_relay.admin import Admins, error_text
from kafka_lfs_relay.commands import INTERNAL_ERROR, internal_error
from kafka_lfs_relay.config import RelayConfig, load_config
from relay import logs
from relay.errors import ConfigError, RelayError, SecretMasker
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.settings import ClusterConfig, TopicConfig
from targets.kafka import KafkaTargetConfig
from targets.kafka.groups import PositionsTail, TargetGroups, Translation, translate_offset
from targets.kafka.positions import Entry, PositionsTopic

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
            for r in self.config.topics
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


def commit_metadata(config: RelayConfig) -> str:
    """The metadata committed with translated offsets: who wrote them."""
    return f"kafka-lfs-relay {config.name}: translated from the source's committed offset"


# -- the command line ---------------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    """Register ``offsets translate`` and ``offsets sync``."""
    offsets = sub.add_parser("offsets", help="translate consumer-group offsets to the target, for failing over")
    osub = offsets.add_subparsers(dest="offsets_command", required=True)
    for name, helptext in (
        ("translate", "print where a group's source offsets land on the target"),
        ("sync", "commit the translated offsets to the group on the target"),
    ):
        cmd = osub.add_parser(name, help=helptext)
        cmd.add_argument("--config", type=Path, required=True, help="the relay's YAML config file")
        cmd.add_argument("--group", required=True, help="the consumer group")
        cmd.add_argument("--source", help="read the group's offsets on this source only (default: every source)")
        if name == "translate":
            cmd.add_argument("--json", action="store_true", help="one JSON object instead of a table")
            cmd.set_defaults(func=cmd_translate)
        else:
            cmd.add_argument("--dry-run", action="store_true", help="show what would be committed; commit nothing")
            cmd.set_defaults(func=cmd_sync)


def _setup(
    args: argparse.Namespace, masker: SecretMasker
) -> tuple[RelayConfig, GroupTranslator, list[ClusterConfig] | None]:
    config = load_config(args.config, masker=masker)
    # Each unreachable cluster is reported in a line of the command's own; the clients' warnings
    # about it would only repeat that, so they show with log.level: debug alone (as in check).
    logs.configure("debug" if config.log.level == "debug" else "error", config.log.format, mask=masker)
    kafka = config.target.kafka
    if kafka is None:
        raise ConfigError(
            "target.type", "offsets need a built-in target type (kafka, lfs, hydrate)", config.target.type
        )
    if not any(r.partition == "preserve" for r in config.topics):
        raise ConfigError(
            "topics", "no topic has partition: preserve; only a mirrored partition has an offset map to translate with"
        )
    sources: list[ClusterConfig] | None = None
    if args.source is not None:
        sources = [s for s in config.sources if s.name == args.source]
        if not sources:
            raise ConfigError("sources", f"has no source named {args.source!r}", [s.name for s in config.sources])
    reader = PositionsTopic(
        kafka.cluster, kafka.positions_topic_for(config.name), config.name, timeout=kafka.transaction_timeout + 30
    )
    timeout = admin_timeout(config)
    translator = GroupTranslator(config, kafka, reader.read, TargetGroups(kafka.cluster, timeout), timeout)
    return config, translator, sources


def _fmt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _table(report: GroupReport, was: Mapping[tuple[str, int], int] | None = None) -> list[str]:
    mixed = len(set(report.origin.values())) > 1
    header = ["topic", "partition", "source", "target", "re-read"]
    if mixed:
        header.insert(2, "from")
    if was is not None:
        header.append("target group was")
    header.append("note")
    rows: list[list[str]] = []
    for t in report.translations:
        row = [t.source.topic, str(t.source.partition), str(t.committed), f"{t.target_topic}@{t.target}"]
        row.append("0" if t.reread == 0 else f"<={t.reread}")
        if mixed:
            row.insert(2, report.origin[t.source])
        if was is not None:
            row.append(_fmt(was.get((t.target_topic, t.source.partition))))
        row.append("exact (batch boundary)" if t.exact else t.note)
        rows.append(row)
    for sp in report.uncommitted:
        row = [sp.topic, str(sp.partition), "-", "-", "-"]
        if mixed:
            row.insert(2, "-")
        if was is not None:
            row.append("-")
        rows.append([*row, "no committed offset on the source: left alone"])
    for sp in report.no_target:
        row = [sp.topic, str(sp.partition), str(report.origin.get(sp, "-")), "-", "-"]
        rows.append([*row, *(["-"] if was is not None else []), "the target partition does not exist yet"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return lines


def _preamble(config: RelayConfig, kafka: KafkaTargetConfig, report: GroupReport) -> list[str]:
    out = [
        f"group {report.group!r}: offsets from source {', '.join(report.answered)}; translated through the offset "
        f"map of relay {config.name!r} (positions topic {kafka.positions_topic_for(config.name)!r} "
        f"on target {kafka.cluster.name})"
    ]
    out += [
        f"source {name} did not answer ({why}); its offsets were not read" for name, why in report.unreachable.items()
    ]
    out += [
        f"{topic}: {count} partition(s) not translated: partition: {_route(config, topic)} mixes source partitions "
        "in a target partition, so there is no per-partition offset map"
        for topic, count in report.untranslatable.items()
    ]
    return out


def _route(config: RelayConfig, topic: str) -> str:
    return str(next(r.partition for r in config.topics if r.source == topic))


def _as_json(report: GroupReport) -> dict[str, Any]:
    return {
        "group": report.group,
        "sources": report.answered,
        "unreachable": report.unreachable,
        "partitions": [
            {
                "topic": t.source.topic,
                "partition": t.source.partition,
                "source_cluster": report.origin[t.source],
                "source_offset": t.committed,
                "target_topic": t.target_topic,
                "target_offset": t.target,
                "reread_at_most": t.reread,
                "exact": t.exact,
                "note": t.note,
            }
            for t in report.translations
        ],
        "uncommitted": [{"topic": sp.topic, "partition": sp.partition} for sp in report.uncommitted],
        "no_target_partition": [{"topic": sp.topic, "partition": sp.partition} for sp in report.no_target],
        "untranslatable": report.untranslatable,
        "reread_at_most": report.reread,
    }


def _run(args: argparse.Namespace, body: Callable[[RelayConfig, GroupTranslator, Any], int]) -> int:
    """``body`` with the config loaded: a user mistake is one line and its exit code, a bug one line
    naming the exception (exit 70), never a traceback; every line scrubbed of the config's secrets."""
    masker = SecretMasker()
    logs.configure(mask=masker)
    try:
        config, translator, sources = _setup(args, masker)
        return body(config, translator, sources)
    except RelayError as exc:
        print(masker(f"kafka-lfs-relay: {exc}"), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug; reported in one line, like check
        print(masker(f"kafka-lfs-relay: {internal_error(exc)}"), file=sys.stderr)
        return INTERNAL_ERROR


def cmd_translate(args: argparse.Namespace) -> int:
    """``offsets translate``: print, per partition, the source offset, its target offset and the re-read."""

    def body(config: RelayConfig, translator: GroupTranslator, sources: Any) -> int:
        report = translator.translate(args.group, sources)
        if args.json:
            print(json.dumps(_as_json(report), indent=2))
            return 0
        assert config.target.kafka is not None
        for line in [*_preamble(config, config.target.kafka, report), *_table(report)]:
            print(line)
        print(f"a consumer switching now re-reads at most {report.reread} record(s)")
        return 0

    return _run(args, body)


def cmd_sync(args: argparse.Namespace) -> int:
    """``offsets sync``: commit the translated offsets to the group on the target, unless it has members there."""

    def body(config: RelayConfig, translator: GroupTranslator, sources: Any) -> int:
        kafka = config.target.kafka
        assert kafka is not None
        report = translator.translate(args.group, sources)
        target = translator.target
        was = target.committed(args.group)
        for line in [*_preamble(config, kafka, report), *_table(report, was)]:
            print(line)
        members = target.active_members(args.group)
        if members:
            raise OffsetsError(
                f"group {args.group!r} has {len(members)} active member(s) on target {kafka.cluster.name} "
                f"({', '.join(members[:3])}{', ...' if len(members) > 3 else ''}); stop them first: offsets are "
                "only committed to a group nobody consumes with there"
            )
        offsets = {(t.target_topic, t.source.partition): t.target for t in report.translations}
        if args.dry_run:
            print(f"dry run: would commit {len(offsets)} partition(s) of group {args.group!r} on {kafka.cluster.name}")
            return 0
        target.commit(args.group, offsets, commit_metadata(config))
        print(
            f"committed {len(offsets)} partition(s) of group {args.group!r} on {kafka.cluster.name}; a consumer "
            f"switching now re-reads at most {report.reread} record(s)"
        )
        return 0

    return _run(args, body)


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
