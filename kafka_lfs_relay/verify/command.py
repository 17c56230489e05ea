"""``kafka-lfs-relay verify``: compare every relayed record with its copy on the target, partition by partition."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from filters import build_filters
from kafka_lfs_relay.admin import Admins, error_text, selected_routes
from kafka_lfs_relay.config import RelayConfig, load_config
from kafka_lfs_relay.exits import INTERNAL_ERROR, internal_error
from kafka_lfs_relay.verify.align import DEFAULT_WINDOW, Fingerprint, Tally, align
from kafka_lfs_relay.verify.plan import RangeReader, VerifyError, segments, split
from kafka_lfs_relay.verify.values import Values, ordered
from lfs import BucketRule, Resolver
from relay import logs
from relay.errors import ConfigError, RelayError, SecretMasker
from relay.message import SourcePartition
from relay.settings import ClusterConfig, TopicConfig
from relay.units import parse_duration
from targets.hydrate import HydrateTargetConfig
from targets.kafka import KafkaTargetConfig
from targets.kafka.groups import TargetGroups
from targets.kafka.positions import Entry, PositionsTopic
from targets.kafka.provenance import cluster_id
from targets.lfs import LfsTargetConfig

_FETCH_DEPTH = 8
_FIRST = ("source_offset", "target_offset", "what")


def add_parser(sub: Any) -> None:
    """Register ``verify``."""
    cmd = sub.add_parser(
        "verify",
        help="prove a mirror complete: compare every relayed record with the target, through the offset map",
    )
    cmd.add_argument("--config", type=Path, required=True, help="the relay's YAML config file")
    cmd.add_argument("--topic", action="append", help="a source topic to verify (repeatable; default: every one)")
    cmd.add_argument(
        "--from-time",
        help="compare only from this time on: ISO 8601 (2026-12-01T00:00:00Z) or a duration ago (24h); "
        "rounded down to a transaction boundary",
    )
    cmd.add_argument("--source", help="the source cluster to compare with (default: the first that answers)")
    cmd.add_argument(
        "--digest", action="store_true", help="keep only digests: no value held in memory, S3 objects streamed"
    )
    cmd.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="records looked ahead on each side")
    cmd.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    cmd.set_defaults(func=cmd_verify)


@dataclass
class PartitionResult:
    """One source partition's verdict."""

    source: SourcePartition
    target_topic: str
    tally: Tally = field(default_factory=Tally)
    note: str = ""
    not_relayed: int = 0
    broken: bool = False
    """The pair could not be compared at all because the target side is gone (a difference)."""

    @property
    def ok(self) -> bool:
        """Whether this partition is complete on the target."""
        return self.tally.clean and not self.broken

    def line(self) -> str:
        t = self.tally
        parts = [f"{t.compared:,} compared"]
        parts.append(f"{t.missing:,} missing" + (f" (first at source offset {t.first_missing})" if t.missing else ""))
        parts.append(f"{t.extra:,} extra" + (f" (first at target offset {t.first_extra})" if t.extra else ""))
        first = t.first_different
        parts.append(
            f"{t.different:,} different"
            + (f" (first: source offset {first[0]}, target offset {first[1]}: {first[2]})" if first else "")
        )
        if t.before:
            parts.append(f"{t.before:,} target records older than the mirror")
        if self.not_relayed:
            parts.append(f"{self.not_relayed:,} not relayed yet")
        verdict = "OK" if self.ok else "DIFFERENT"
        where = f"{self.source.topic}/{self.source.partition} -> {self.target_topic}/{self.source.partition}"
        return f"{where}: {', '.join(parts)}{f'; {self.note}' if self.note else ''}: {verdict}"

    def as_json(self) -> dict[str, Any]:
        t, first = self.tally, self.tally.first_different
        return {
            "topic": self.source.topic,
            "partition": self.source.partition,
            "target_topic": self.target_topic,
            "compared": t.compared,
            "missing": t.missing,
            "first_missing_source_offset": t.first_missing,
            "extra": t.extra,
            "first_extra_target_offset": t.first_extra,
            "different": t.different,
            "first_different": None if first is None else dict(zip(_FIRST, first, strict=True)),
            "older_than_mirror": t.before,
            "not_relayed_yet": self.not_relayed,
            "note": self.note,
            "ok": self.ok,
        }


def parse_from_time(text: str, now: float | None = None) -> int:
    """``--from-time`` as epoch milliseconds: an ISO 8601 time (UTC unless it says otherwise) or a duration ago."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp() * 1000)
    except ValueError:
        pass
    try:
        ago = parse_duration(text, "--from-time")
    except ConfigError:
        raise ConfigError("--from-time", "expected an ISO 8601 time or a duration such as 24h", text) from None
    return int(((now if now is not None else time.time()) - ago) * 1000)


class Verifier:
    """Compares the relay of ``config``'s source partitions with the target; see the package docstring."""

    def __init__(self, config: RelayConfig, args: argparse.Namespace) -> None:
        kafka = config.target.kafka
        if kafka is None or not config.target.builtin:
            raise ConfigError(
                "target.type", "verify needs a built-in target type (kafka, lfs, hydrate)", config.target.type
            )
        self.config = config
        self.kafka: KafkaTargetConfig = kafka
        self.window = max(1, args.window)
        self.from_ms = parse_from_time(args.from_time) if args.from_time else None
        self.timeout = max(10.0, 5 * config.source_pool.request_timeout)
        try:
            selected = selected_routes(config, Admins(), self.timeout)
        except KafkaException as exc:
            raise VerifyError(f"no source cluster listed its topics: {error_text(exc)}") from None
        self.routes = _routes(config, selected, args.topic)
        if not self.routes:
            raise VerifyError("the config selects no source topic now: nothing to verify")
        self.source = self._source_cluster(args.source)
        stamp = None
        if config.provenance:
            # The relay stamps each record with its source cluster's id and drops a record whose
            # provenance already names the target (targets.kafka.provenance): so is each expected.
            stamp = (cluster_id(self.source, self.timeout), cluster_id(kafka.cluster, self.timeout))
        self.values = _values(config, args.digest, stamp)
        self._pool = ThreadPoolExecutor(_FETCH_DEPTH, thread_name_prefix="verify-fetch")

    def _source_cluster(self, name: str | None) -> ClusterConfig:
        sources = [s for s in self.config.sources if name is None or s.name == name]
        if not sources:
            raise ConfigError("--source", "names no source of the config", name)
        reasons = []
        for cluster in sources:
            try:
                TargetGroups(cluster, self.timeout).log_range({(self.routes[0].source, 0)})
                return cluster
            except Exception as exc:  # an unreachable source: the next one is asked
                reasons.append(f"{cluster.name}: {exc}")
        raise VerifyError(f"no source cluster answered ({'; '.join(reasons)})")

    def run(self, report: Callable[[PartitionResult], None]) -> list[PartitionResult]:
        """Verify every partition of the selected topics, reporting each as it is done."""
        partitions = self._partitions()
        positions = PositionsTopic(
            self.kafka.cluster, self.kafka.positions_topic_for(self.config.name), self.config.name,
            timeout=self.kafka.transaction_timeout + 30,
        ).read(list(partitions))  # fmt: skip
        src_ranges = TargetGroups(self.source, self.timeout).log_range({(sp.topic, sp.partition) for sp in partitions})
        wanted = {(partitions[sp], sp.partition) for sp in partitions}
        tgt_ranges = TargetGroups(self.kafka.cluster, self.timeout).log_range(wanted)
        # A relay that died inside a transaction holds committed records back until the broker aborts it.
        source_reader = RangeReader(self.source)
        target_reader = RangeReader(self.kafka.cluster, stall=self.kafka.transaction_timeout + 30)
        results = []
        try:
            for sp, target_topic in partitions.items():
                result = PartitionResult(sp, target_topic)
                src = src_ranges.get((sp.topic, sp.partition))
                tgt = tgt_ranges.get((target_topic, sp.partition))
                entry = positions.get(sp)
                if entry is None:
                    result.note = "nothing relayed yet"
                    result.not_relayed = max(0, src[1] - src[0]) if src else 0
                elif src is None or tgt is None:
                    result.note = f"the {'source' if src is None else 'target'} partition does not exist"
                    result.broken = True
                else:
                    result.not_relayed = max(0, src[1] - max(entry.next, src[0]))
                    self._compare(result, entry, src, tgt, source_reader, target_reader)
                results.append(result)
                report(result)
        finally:
            source_reader.close()
            target_reader.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
        return results

    def _partitions(self) -> dict[SourcePartition, str]:
        return {
            SourcePartition(r.source, p): r.target
            for r in self.routes
            for p in range(_partition_count(self.source, r.source, self.timeout))
        }

    def _compare(
        self,
        result: PartitionResult,
        entry: Entry,
        src: tuple[int, int],
        tgt: tuple[int, int],
        source_reader: RangeReader,
        target_reader: RangeReader,
    ) -> None:
        sp, topic = result.source, result.target_topic
        from_offset = None
        if self.from_ms is not None:
            from_offset = source_reader.offset_for_time(sp.topic, sp.partition, self.from_ms)
            if from_offset < 0:
                from_offset = entry.next
        segs = segments(entry, src[0], tgt[0], from_offset)
        if not segs:
            result.note = "nothing to compare (no offset-map point within both logs, or none after --from-time)"
            return
        src_stream = source_reader.read(sp.topic, sp.partition, segs[0].src_start, segs[-1].src_end)
        tgt_stream = target_reader.read(topic, sp.partition, segs[0].tgt_start, segs[-1].tgt_end)
        src_parts = split(src_stream, [s.src_end for s in segs])
        tgt_parts = split(tgt_stream, [s.tgt_end for s in segs])
        for seg, s_msgs, t_msgs in zip(segs, src_parts, tgt_parts, strict=True):
            result.tally.add(align(self._sources(s_msgs, topic), self._targets(t_msgs), self.window, head=seg.head))
        if segs[0].src_start > src[0] and self.from_ms is None:
            result.note = f"source offsets below {segs[0].src_start} not compared (before the oldest offset-map point)"

    def _sources(self, msgs: Iterator[KafkaMessage], target_topic: str) -> Iterator[Fingerprint]:
        for msg in msgs:
            fp = self.values.source(msg, self.source.name, target_topic)
            if fp is not None:
                yield fp

    def _targets(self, msgs: Iterator[KafkaMessage]) -> Iterator[Fingerprint]:
        if self.values.kind == "lfs" and self.values.target_reader is not None:
            # Envelopes are fetched and hashed on a pool, in order, a few records ahead.
            yield from ordered(self._pool, self.values.target, msgs, _FETCH_DEPTH)
        else:
            yield from map(self.values.target, msgs)

    def close(self) -> None:
        for reader in (self.values.target_reader, self.values.source_reader):
            if reader is not None:
                reader.close()


def _routes(config: RelayConfig, selected: Sequence[TopicConfig], topics: Sequence[str] | None) -> list[TopicConfig]:
    """The routes to verify: those ``config`` selects now (its patterns' matches too), or the ``--topic`` ones."""
    routes = list(selected)
    if topics:
        known = {r.source for r in routes}
        for topic in topics:
            if topic not in known:
                raise ConfigError("--topic", f"is not a source topic of the config ({', '.join(sorted(known))})", topic)
        routes = [r for r in routes if r.source in topics]
    for route in routes:
        if route.partition != "preserve":
            raise ConfigError(
                f"topics[{_entry(config, route.source)}].partition",
                f"is {route.partition!r}: verify pairs each source partition with its target partition through the "
                "offset map, which only partition: preserve has (leave this topic out with --topic)",
                route.partition,
            )
    return routes


def _entry(config: RelayConfig, topic: str) -> int:
    """The index of the ``topics`` entry that selects ``topic``."""
    rules = config.rules
    return rules.rules.index(rules.rule_of(topic))


def _partition_count(cluster: ClusterConfig, topic: str, timeout: float) -> int:
    conf: dict[str, Any] = {**cluster.client_config(), "logger": logs.librdkafka_logger()}
    md = AdminClient(conf).list_topics(topic, timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        reason = meta.error.str() if meta is not None and meta.error is not None else "it does not exist"
        raise VerifyError(f"source {cluster.name}: topic {topic}: {reason}")
    return len(meta.partitions)


def _values(config: RelayConfig, digest_only: bool, stamp: tuple[str, str] | None = None) -> Values:
    settings = config.target.settings
    chain = build_filters(config.filters) if config.filters else None
    if isinstance(settings, LfsTargetConfig):
        lfs = settings.lfs
        target = Resolver(lfs.s3, [BucketRule(lfs.bucket)], max_object_size=lfs.s3.max_object_size,
                          concurrency=_FETCH_DEPTH, part_size=lfs.part_size, retries=5)  # fmt: skip
        source = None
        if lfs.rehome is not None:
            source = Resolver(lfs.rehome.s3, lfs.rehome.policy, max_object_size=lfs.rehome.max_object_size,
                              allow_unverified=True, retries=5)  # fmt: skip
        return Values("lfs", filters=chain, bucket=lfs.bucket, target_reader=target, source_reader=source,
                      digest_only=digest_only, stamp=stamp)  # fmt: skip
    if isinstance(settings, HydrateTargetConfig):
        hydrate = settings.hydrate
        source = Resolver(hydrate.s3, hydrate.policy, allow_unverified=True, retries=5)
        return Values("hydrate", filters=chain, source_reader=source, digest_only=digest_only, stamp=stamp)
    return Values("kafka", filters=chain, digest_only=digest_only, stamp=stamp)


def _summary(results: Sequence[PartitionResult], seconds: float, values: Values) -> str:
    compared = sum(r.tally.compared for r in results)
    differing = sum(not r.ok for r in results)
    rate = compared / seconds if seconds > 0 else 0.0
    fetched = (
        f", {values.fetched:,} objects fetched ({values.fetched_bytes / 2**20:,.1f} MiB)" if values.fetched else ""
    )
    verdict = f"{differing} partition(s) differ" if differing else "every relayed record is on the target"
    return (
        f"verified {len(results)} partition(s): {compared:,} records compared in {seconds:.1f}s "
        f"({rate:,.0f} records/s){fetched}: {verdict}"
    )


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify``: one line per partition, then a summary; exit 1 on any difference.

    A user mistake is one line and its exit code (2 for the config), a bug one line naming the
    exception (70), never a traceback; every line is scrubbed of the config's secrets.
    """
    masker = SecretMasker()
    logs.configure(mask=masker)
    verifier: Verifier | None = None
    try:
        config = load_config(args.config, masker=masker)
        logs.configure("debug" if config.log.level == "debug" else "error", config.log.format, mask=masker)
        verifier = Verifier(config, args)
        started = time.monotonic()
        results = verifier.run(lambda r: None if args.json else print(masker(r.line()), flush=True))
        seconds = time.monotonic() - started
        summary = _summary(results, seconds, verifier.values)
        if args.json:
            doc = {"partitions": [r.as_json() for r in results], "seconds": round(seconds, 3), "summary": summary}
            print(masker(json.dumps(doc, indent=2)))
        else:
            print(masker(summary))
        return 0 if all(r.ok for r in results) else 1
    except RelayError as exc:
        print(masker(f"kafka-lfs-relay: {exc}"), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug; one line, like check
        print(masker(f"kafka-lfs-relay: {internal_error(exc)}"), file=sys.stderr)
        return INTERNAL_ERROR
    finally:
        if verifier is not None:
            verifier.close()
