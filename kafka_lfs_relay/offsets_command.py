"""``kafka-lfs-relay offsets translate|sync``: a group's source offsets, translated to the target, printed or committed.

The translation itself is :mod:`kafka_lfs_relay.offsets`; this module is the command line around it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kafka_lfs_relay.config import RelayConfig, load_config
from kafka_lfs_relay.exits import INTERNAL_ERROR, internal_error
from kafka_lfs_relay.offsets import (
    GroupReport,
    GroupTranslator,
    OffsetsError,
    admin_timeout,
    commit_metadata,
)
from relay import logs
from relay.errors import ConfigError, RelayError, SecretMasker
from relay.settings import ClusterConfig
from targets.kafka import KafkaTargetConfig
from targets.kafka.groups import TargetGroups
from targets.kafka.positions import PositionsTopic


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
    if not any(r.partition == "preserve" for r in config.rules.rules):
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
    rule = config.rules.rule_of(topic)
    return str(rule.partition if rule is not None else "?")


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
