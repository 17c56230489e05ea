"""Positions as earlier releases kept them: a ``kfr-pos`` header in the data, read back once on upgrade.

Earlier releases put, on the last record of each transaction in each target partition, the
header ``kfr-pos``: the source topic and, for the source partitions that target partition stood
for, the next source offset to read. The element-wise maximum of the newest committed
``kfr-pos`` found in each target partition was the resume point (:func:`merge`).

Today positions live in the positions topic (:mod:`targets.kafka.positions`). A relay whose
positions topic has no entry for a partition reads this header back once, the way earlier
releases did (:func:`newest_positions`), and writes what it found to the positions topic
(``target.import_header_positions``, on by default). Headers carry no writer identity, which
is why they are no longer trusted for anything else.

Wire format (ASCII): ``v1 <source-topic> <p>:<next>[,<p>:<next>...]``. Topic names cannot hold
spaces, so the format needs no escaping.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import Consumer, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from relay.backoff import backoff_delay
from relay.kafkautil import OffsetsError, headers_of, list_offsets
from relay.logs import librdkafka_logger
from relay.message import SourcePartition

HEADER = "kfr-pos"
MAX_OFFSET = 2**63 - 1
_VERSION = "v1"


class PositionFormatError(ValueError):
    """A ``kfr-pos`` header that this version cannot read."""


def encode(source_topic: str, positions: Mapping[int, int]) -> bytes:
    """The header value for ``positions`` (source partition -> next offset) of ``source_topic``."""
    body = ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))
    return f"{_VERSION} {source_topic} {body}".encode("ascii")


_FORMAT = re.compile(rb"v1 ([A-Za-z0-9._-]{1,249}) ((?:[0-9]{1,10}:[0-9]{1,19}(?:,[0-9]{1,10}:[0-9]{1,19})*)?)")


def decode(value: bytes) -> dict[SourcePartition, int]:
    """The positions in a header value; raises :class:`PositionFormatError` if it is malformed."""
    match = _FORMAT.fullmatch(value)
    if match is None:
        version = value.split(b" ", 1)[0]
        if version != _VERSION.encode() and re.fullmatch(rb"v[0-9]+", version):
            raise PositionFormatError(f"unknown {HEADER} version {version.decode()!r}")
        raise PositionFormatError(f"malformed {HEADER} header")
    topic = match.group(1).decode("ascii")
    out: dict[SourcePartition, int] = {}
    for item in match.group(2).split(b",") if match.group(2) else ():
        p, o = item.split(b":")
        sp = SourcePartition(topic, int(p))
        if int(o) > MAX_OFFSET:
            raise PositionFormatError(f"{HEADER} header names offset {int(o)}, beyond any Kafka offset")
        if sp in out:
            raise PositionFormatError(f"malformed {HEADER} header: partition {int(p)} appears twice")
        out[sp] = int(o)
    return out


def merge(found: Iterable[Mapping[SourcePartition, int]]) -> dict[SourcePartition, int]:
    """Element-wise maximum: the newest position of every source partition seen in any vector."""
    out: dict[SourcePartition, int] = {}
    for vector in found:
        for sp, offset in vector.items():
            if offset > out.get(sp, -1):
                out[sp] = offset
    return out


log = structlog.get_logger("kafka_lfs_relay.target")

_WINDOW = 512


class TailScanError(RuntimeError):
    """The target could not be read back; the message names the topic/partition."""


def _scan_window(
    consumer: Consumer, topic: str, partition: int, start: int, end: int, timeout: float
) -> dict[SourcePartition, int] | None:
    """The last position vector among committed records in ``[start, end)``, or None."""
    consumer.assign([TopicPartition(topic, partition, start)])
    newest: dict[SourcePartition, int] | None = None
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise TailScanError(
                f"reading back {topic}/{partition} offsets {start}..{end} timed out after {timeout:.0f}s"
            )
        batch = consumer.consume(500, timeout=0.5)
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return newest
                raise TailScanError(f"reading back {topic}/{partition}: {err.str()}")
            offset = msg.offset() or 0
            if offset >= end:
                return newest
            for name, value in headers_of(msg):
                if name == HEADER and isinstance(value, bytes):
                    try:
                        newest = decode(value)
                    except PositionFormatError as exc:
                        # Not a position this relay wrote (another version, another writer): it
                        # is passed over, never trusted, and never stops a start-up.
                        log.warning(
                            "ignoring a kfr-pos header", record=f"{topic}/{partition}@{offset}", reason=str(exc)
                        )
            if offset >= end - 1:
                return newest


def _watermarks(
    client_config: dict[str, str], partitions: Sequence[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """Low and high watermark of every one of ``partitions``, in one request each, asking again while
    leadership settles (a new topic): one round trip for a thousand partitions, not one per partition."""
    conf: dict[str, Any] = {**client_config, "logger": librdkafka_logger()}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            every = IsolationLevel.READ_UNCOMMITTED
            low = list_offsets(admin, partitions, OffsetSpec.earliest(), every, timeout)  # type: ignore[no-untyped-call]
            high = list_offsets(admin, partitions, OffsetSpec.latest(), every, timeout)  # type: ignore[no-untyped-call]
            return {where: (low[where], high[where]) for where in partitions}
        except OffsetsError as exc:
            attempt += 1
            err: KafkaError = exc.args[0]
            if not err.retriable() or time.monotonic() > deadline:
                raise TailScanError(f"reading the end offsets of {exc.where}: {err.str()}") from None
            time.sleep(backoff_delay(0.1, 2.0, attempt))


def newest_positions(
    client_config: dict[str, str],
    partitions: Sequence[tuple[str, int]],
    timeout: float = 30.0,
    on_window: Callable[[str, int, int], None] | None = None,
) -> list[dict[SourcePartition, int]]:
    """For each target partition (topic, partition), the newest committed position vector, scanning backwards.

    Records of other producers at the tail are skipped; a partition that holds no relay record
    at all is read back to its start (once per start-up); an empty one is not read at all.
    """
    if not partitions:
        return []
    marks = _watermarks(client_config, partitions, timeout)
    conf = {
        **client_config,
        "group.id": f"kafka-lfs-relay-tailscan-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "logger": librdkafka_logger(),
    }
    consumer: Consumer | None = None
    found: list[dict[SourcePartition, int]] = []
    try:
        for topic, partition in partitions:
            low, high = marks[(topic, partition)]
            end, window = high, _WINDOW
            while end > low:
                consumer = consumer or Consumer(conf)
                start = max(low, end - window)
                if on_window is not None:
                    on_window(topic, partition, start)
                vector = _scan_window(consumer, topic, partition, start, end, timeout)
                if vector is not None:
                    found.append(vector)
                    break
                end, window = start, min(window * 4, 1 << 20)
    finally:
        if consumer is not None:
            consumer.close()
    return found
