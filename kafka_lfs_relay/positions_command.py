"""``kafka-lfs-relay positions copy``: take over another relay's positions, for a relay that was renamed.

A relay's positions are keyed by its name (:mod:`targets.kafka.positions`). A relay renamed in its
config has none, and refuses a target that already holds records (``target.on_existing_data``).
This command reads the old relay's entries for this config's source topics from its positions
topic and writes them, unchanged but for their writer, as this relay's, in one transaction.

It refuses
  * while the old relay may still be running: it wrote an entry within ``target.transaction_timeout``
    (a relay that runs commits its positions with every transaction; ``--force`` skips this check
    for a relay known to be stopped). An old relay that runs but has had nothing to relay for that
    long cannot be told from a stopped one: stop it before copying;
  * when this relay already has positions for those topics (it ran under its new name already);
  * when the old relay has no positions for them.

``--from`` this relay's own name takes over the positions another transactional id wrote under
that name (the relay's ``transactional_id`` was changed on purpose): the same checks, but for the
second, and the entries are rewritten naming this relay's transactional id.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from kafka_lfs_relay.config import RelayConfig, load_config
from kafka_lfs_relay.exits import INTERNAL_ERROR, internal_error
from relay import logs
from relay.errors import ConfigError, RelayError, SecretMasker
from relay.logs import librdkafka_logger
from relay.message import SourcePartition
from targets.kafka import KafkaTargetConfig
from targets.kafka.positions import TOPIC_CONFIG, Entry, PositionsTopic, default_topic, records
from targets.kafka.sender import producer_config


class PositionsError(RelayError):
    """Positions cannot be copied; the message says why."""

    code = "positions"


def add_parser(sub: Any) -> None:
    """Register ``positions copy``."""
    positions = sub.add_parser("positions", help="manage the relay's resume positions")
    psub = positions.add_subparsers(dest="positions_command", required=True)
    copy = psub.add_parser("copy", help="take over a stopped relay's positions (after renaming a relay)")
    copy.add_argument("--config", type=Path, required=True, help="the YAML config of the relay that takes them over")
    copy.add_argument("--from", dest="old", required=True, metavar="OLD_NAME", help="the name the relay had")
    copy.add_argument("--from-topic", help="the old relay's positions topic (default: OLD_NAME-positions)")
    copy.add_argument("--force", action="store_true", help="copy even if the old relay wrote positions just now")
    copy.set_defaults(func=cmd_copy)


def cmd_copy(args: argparse.Namespace) -> int:
    """``positions copy``: one line on any refusal and its exit code, never a traceback."""
    masker = SecretMasker()
    logs.configure(mask=masker)
    try:
        config = load_config(args.config, masker=masker)
        logs.configure("debug" if config.log.level == "debug" else "error", config.log.format, mask=masker)
        print(masker(copy_positions(config, args.old, args.from_topic, args.force)))
        return 0
    except RelayError as exc:
        print(masker(f"kafka-lfs-relay: {exc}"), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug; reported in one line, like check
        print(masker(f"kafka-lfs-relay: {internal_error(exc)}"), file=sys.stderr)
        return INTERNAL_ERROR


def copy_positions(config: RelayConfig, old: str, old_topic: str | None, force: bool) -> str:
    """Copy relay ``old``'s positions for ``config``'s source topics to ``config``'s relay; returns what it did."""
    kafka = config.target.kafka
    if kafka is None:
        raise ConfigError(
            "target.type", "positions need a built-in target type (kafka, lfs, hydrate)", config.target.type
        )
    name, cluster = config.name, kafka.cluster
    topics = {r.source for r in config.topics}
    new_topic = kafka.positions_topic_for(name)
    old_topic = old_topic or (new_topic if old == name else default_topic(old))
    writer = kafka.transactional_id or name
    timeout = kafka.transaction_timeout + 30
    _ensure_topic(kafka, new_topic)
    reader = PositionsTopic(cluster, old_topic, old, timeout)
    found = {sp: e for sp, e in reader.read(None).items() if sp.topic in topics}
    if not found:
        raise PositionsError(
            f"positions topic {old_topic!r} on {cluster.name} holds no positions of relay {old!r} for topic(s) "
            f"{', '.join(sorted(topics))}"
        )
    idle = time.time() - reader.newest_ms / 1000
    if not force and idle < kafka.transaction_timeout:
        raise PositionsError(
            f"relay {old!r} wrote positions {idle:.0f} s ago, within target.transaction_timeout "
            f"({kafka.transaction_timeout:g} s): it may still be running; stop it, then run this again once it has "
            "written nothing for that long (--force if it is known to be stopped)"
        )
    if old == name:
        if all(e.writer == writer for e in found.values()):
            raise PositionsError(f"the positions of relay {name!r} are written by {writer!r} already; nothing to do")
    else:
        mine = {sp for sp in PositionsTopic(cluster, new_topic, name, timeout).read(None) if sp.topic in topics}
        if mine:
            raise PositionsError(
                f"relay {name!r} already has positions in {new_topic!r} for {len(mine)} partition(s) "
                f"(e.g. {min(mine).topic}/{min(mine).partition}); it relayed under this name already, refusing to "
                "overwrite them"
            )
    _write(kafka, writer, new_topic, name, found)
    return (
        f"copied {len(found)} position(s) of relay {old!r} (topic {old_topic!r}) to relay {name!r} (topic "
        f"{new_topic!r}) on {cluster.name}, written as transactional id {writer!r}"
    )


def _ensure_topic(kafka: KafkaTargetConfig, topic: str) -> None:
    """Create the positions topic as the relay would, if it does not exist."""
    conf: dict[str, Any] = {**kafka.cluster.client_config(), "logger": librdkafka_logger()}
    admin = AdminClient(conf)
    future = admin.create_topics(
        [NewTopic(topic, 1, kafka.replication_factor, config=dict(TOPIC_CONFIG))], operation_timeout=30
    )[topic]
    try:
        future.result(timeout=60)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise PositionsError(
                f"creating positions topic {topic!r} on {kafka.cluster.name}: {exc.args[0].str()}"
            ) from None


def _write(
    kafka: KafkaTargetConfig, writer: str, topic: str, name: str, entries: Mapping[SourcePartition, Entry]
) -> None:
    """Write ``entries`` as relay ``name``'s in one transaction as ``writer`` (which fences a relay writing as it)."""
    conf: dict[str, Any] = {**producer_config(kafka.cluster, writer, kafka.transaction_timeout)}
    conf["logger"] = librdkafka_logger()
    producer = Producer(conf)
    try:
        producer.init_transactions(kafka.transaction_timeout)
        producer.begin_transaction()
        for key, value in records(name, entries, writer):
            producer.produce(topic, value, key, partition=0)
        producer.commit_transaction(kafka.transaction_timeout)
    except KafkaException as exc:
        raise PositionsError(
            f"writing the positions of relay {name!r} to {topic!r} on {kafka.cluster.name}: {exc.args[0].str()}"
        ) from None
