"""Target partitions that already hold records: what a relay with no position there must not copy next to blindly.

A relay that has no positions entry for a source partition starts it from the source's beginning.
If the target partition it writes to already holds records, they came from somewhere else: the
same relay under its old name (renamed in its config), another relay or tool, or this relay
before its positions were deleted. Copying from the beginning next to them duplicates every
record in the first case, so the relay asks (``target.on_existing_data``) instead of guessing.

"Holds records" means committed records a ``read_committed`` consumer sees: a relay killed in its
first transaction leaves only aborted records behind, which must not stop its own restart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from relay.kafkautil import list_offsets
from relay.logs import librdkafka_logger
from relay.settings import ClusterConfig
from relay.target import TargetError

Where = tuple[str, int]
"""A target partition: (topic, partition)."""


def held(cluster: ClusterConfig, partitions: Collection[Where], timeout: float = 30.0) -> dict[Where, tuple[int, int]]:
    """Those of ``partitions`` that hold committed records, with their log start and end offsets (the records
    number at most their difference: transaction markers and aborted records take offsets too).

    Raises :class:`TargetError` naming the cluster when it cannot be read.
    """
    if not partitions:
        return {}
    conf: dict[str, Any] = {**cluster.client_config(), "logger": librdkafka_logger()}
    try:
        admin = AdminClient(conf)
        committed = IsolationLevel.READ_COMMITTED
        start = list_offsets(admin, partitions, OffsetSpec.earliest(), committed, timeout)  # type: ignore[no-untyped-call]
        end = list_offsets(admin, partitions, OffsetSpec.latest(), committed, timeout)  # type: ignore[no-untyped-call]
    except KafkaException as exc:
        raise TargetError(
            f"target {cluster.name}: reading the offsets of the target topics: {exc.args[0].str()}"
        ) from None
    spans = {w: end[w] - start[w] for w in partitions if end[w] > start[w]}
    return {w: (start[w], end[w]) for w in _with_committed(cluster, start, spans, timeout)}


def _with_committed(
    cluster: ClusterConfig, start: dict[Where, int], spans: dict[Where, int], timeout: float
) -> set[Where]:
    """Those of ``spans`` in which a ``read_committed`` consumer finds a record (not only aborted ones)."""
    if not spans:
        return set()
    consumer = Consumer(
        {
            **cluster.client_config(),
            "group.id": f"kafka-lfs-relay-existing-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "logger": librdkafka_logger(),
        }
    )
    found: set[Where] = set()
    todo = set(spans)
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(t, p, start[(t, p)]) for t, p in todo])
        while todo:
            if time.monotonic() > deadline:
                raise TargetError(
                    f"target {cluster.name}: reading {', '.join(f'{t}/{p}' for t, p in sorted(todo))} to tell whether "
                    f"they hold records did not finish within {timeout:.0f} s"
                )
            for msg in consumer.consume(100, 0.5):
                where = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise TargetError(f"target {cluster.name}: reading {where[0]}/{where[1]}: {err.str()}")
                if where not in todo:
                    continue
                todo.discard(where)
                if err is None:
                    found.add(where)
                consumer.pause([TopicPartition(*where)])  # answered: fetch no more of it
    finally:
        consumer.close()
    return found
