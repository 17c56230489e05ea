"""What the Kafka target checks when it resumes: that its positions are its own and describe the topics there now.

* **The writer.** Every entry names the transactional id that wrote it. Two relays with one name
  but different transactional ids would resume from each other's positions and never fence each
  other: the second is refused (:func:`check_writers`).
* **The topics.** Every entry names the Kafka topic id of the source topic (per source cluster:
  the clusters of a failover pair give the same topic different ids) and of the target topic
  (:func:`reconcile`). A source topic with a new id was deleted and created again: its records are
  new data, relayed from its beginning. A target topic with a new id lost what was relayed into it:
  the relay goes on from its position and a new offset map starts there (``since``), so no group is
  translated to records that are not on the target. An entry without ids (written before they
  were kept) is trusted as it is, and gets them with its next write.
* **Records nobody accounts for.** A source partition with no entry whose target partition
  already holds records (:func:`refuse_existing`): see :mod:`targets.kafka.existing`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace

import structlog

from relay.message import SourcePartition
from relay.settings import ClusterConfig, TopicConfig
from relay.target import TargetError
from targets.kafka import existing
from targets.kafka.positions import Entry

log = structlog.get_logger("kafka_lfs_relay.target")


@dataclass(frozen=True)
class TopicIds:
    """The topic ids seen now: on source cluster ``source_cluster`` (None: not known), and on the target."""

    source_cluster: str | None = None
    source: Mapping[str, str] = field(default_factory=dict)
    target: Mapping[str, str] = field(default_factory=dict)


def check_writers(entries: Mapping[SourcePartition, Entry], writer: str, name: str, where: str) -> None:
    """Raise :class:`TargetError` if an entry of relay ``name`` was written by another transactional id than
    ``writer``; ``where`` names the positions topic and cluster."""
    others = sorted({e.writer for e in entries.values() if e.writer and e.writer != writer})
    if others:
        raise TargetError(
            f"{where} holds positions of relay {name!r} written by transactional id {others[0]!r}, but this relay "
            f"writes as {writer!r}: two relays with one name would resume from each other's positions; give this "
            f"relay a name of its own, or, if the relay writing as {others[0]!r} is stopped for good, take its "
            f"positions over: kafka-lfs-relay positions copy --from {name} --config FILE"
        )


def _with(ids: tuple[tuple[str, str], ...], cluster: str | None, topic_id: str | None) -> tuple[tuple[str, str], ...]:
    if cluster is None or topic_id is None:
        return ids
    return tuple(sorted({**dict(ids), cluster: topic_id}.items()))


def reconcile(
    entries: Mapping[SourcePartition, Entry],
    wanted: Collection[SourcePartition],
    routes: Mapping[str, TopicConfig],
    ids: TopicIds,
    writer: str,
    source_recreated: Callable[[str], None],
) -> tuple[dict[SourcePartition, Entry], dict[SourcePartition, Entry]]:
    """The current entry of each of ``wanted`` (a fresh one at -1 where there is none), stamped with ``writer``
    and the topic ids now, and those of them that must be written at once (a topic was recreated).

    ``source_recreated`` is called once per source topic found recreated (for the metric).
    """
    current: dict[SourcePartition, Entry] = {}
    unwritten: dict[SourcePartition, Entry] = {}
    cluster = ids.source_cluster
    recreated: dict[tuple[str, str, str], list[str]] = {}
    for sp in sorted(wanted, key=lambda s: (s.topic, s.partition)):
        target = routes[sp.topic].target
        sid, tid = ids.source.get(sp.topic), ids.target.get(target)
        entry = entries.get(sp)
        if entry is None:
            current[sp] = Entry(-1, writer=writer, source_ids=_with((), cluster, sid), target_id=tid)
            continue
        old_sid = entry.source_id(cluster) if cluster is not None else None
        if old_sid is not None and sid is not None and old_sid != sid:
            recreated.setdefault(("source", sp.topic, f"{old_sid} {sid}"), []).append(str(sp.partition))
            current[sp] = unwritten[sp] = Entry(-1, writer=writer, source_ids=_with((), cluster, sid), target_id=tid)
            continue
        if entry.target_id is not None and tid is not None and entry.target_id != tid:
            recreated.setdefault(("target", target, f"{entry.target_id} {tid}"), []).append(str(sp.partition))
            since = entry.next if entry.next >= 0 else None
            fresh = Entry(entry.next, (), writer, _with(entry.source_ids, cluster, sid), tid, since)
            current[sp] = unwritten[sp] = fresh
            continue
        current[sp] = replace(
            entry, writer=writer, source_ids=_with(entry.source_ids, cluster, sid), target_id=tid or entry.target_id
        )
    _report_recreated(recreated, cluster, source_recreated)
    return current, unwritten


def _report_recreated(
    recreated: Mapping[tuple[str, str, str], list[str]], cluster: str | None, source_recreated: Callable[[str], None]
) -> None:
    """Warn once per recreated topic and count each recreated source topic; ``recreated`` maps
    ``(side, topic, "old_id new_id")`` to the partitions that found it."""
    for (side, topic, change), partitions in recreated.items():
        old_id, new_id = change.split(" ")
        if side == "source":
            log.warning(
                "source topic was recreated; its records are relayed from its beginning",
                topic=topic,
                source=cluster,
                old_id=old_id,
                new_id=new_id,
                partitions=partitions,
            )
            source_recreated(topic)
        else:
            log.warning(
                "target topic was recreated; a new offset map starts",
                topic=topic,
                old_id=old_id,
                new_id=new_id,
                partitions=partitions,
                detail="the relay goes on from its positions; records relayed before are not on the new topic, and "
                "consumer groups committed before that point are not translated",
            )


def refuse_existing(
    cluster: ClusterConfig,
    name: str,
    missing: Collection[SourcePartition],
    has_entries: Collection[str],
    routes: Mapping[str, TopicConfig],
    partitions: Mapping[str, int],
) -> None:
    """Raise :class:`TargetError` if a target partition that ``missing`` (source partitions with no entry) would
    write to already holds records.

    Under ``partition: preserve`` that is the partition of the same number; under ``key`` or a fixed
    partition any partition of the target topic, unless the relay has entries for other partitions of
    the source topic (``has_entries``: then the records are its own).
    """
    candidates: dict[tuple[str, int], SourcePartition] = {}
    for sp in sorted(missing, key=lambda s: (s.topic, s.partition)):
        route = routes[sp.topic]
        if route.partition == "preserve":
            candidates.setdefault((route.target, sp.partition), sp)
        elif sp.topic not in has_entries:
            for p in range(partitions.get(route.target, 0)):
                candidates.setdefault((route.target, p), sp)
    found = existing.held(cluster, candidates)
    if not found:
        return
    (topic, partition), (start, end) = min(found.items())
    sp = candidates[(topic, partition)]
    more = f" (and {len(found) - 1} more partition(s))" if len(found) > 1 else ""
    raise TargetError(
        f"target topic {topic!r} partition {partition} on {cluster.name} already holds up to {end - start} records "
        f"(offsets {start} to {end - 1}){more}, and "
        f"relay {name!r} has no position for {sp.topic}/{sp.partition} (was the relay renamed?). To take over a "
        f"stopped relay's positions: kafka-lfs-relay positions copy --from OLD_NAME --config FILE; to relay the "
        f"source from its beginning next to those records: set target.on_existing_data: append"
    )
