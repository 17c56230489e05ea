"""Unit tests of how the Kafka target builds a transaction's records (no broker: nothing is produced here)."""

from __future__ import annotations

import pytest

from relay.message import Message
from relay.settings import TopicConfig
from targets.kafka.batches import BatchBuilder, Record, Unit


def message(partition: int, offset: int) -> Message:
    return Message(
        key=None,
        value=b"v",
        headers=(),
        topic="out",
        source_cluster="src",
        source_topic="in",
        source_partition=partition,
        source_offset=offset,
        timestamp_ms=1,
    )


def builder(transform: object = None) -> BatchBuilder:
    return BatchBuilder([TopicConfig("in", "out", "preserve")], {"out": 2}, transform)  # type: ignore[arg-type]


def test_records_superseded_in_their_partition_are_given_early_in_order() -> None:
    """Every record but the last of its target partition goes to ``early`` as soon as a later one lands there."""
    batch = [message(0, 10), message(1, 20), message(0, 11), message(0, 12), message(1, 21)]
    early: list[tuple[int, int]] = []
    records, batch_next, last = builder().build(
        Unit(batch), lambda rec: early.append((rec[0].source_partition, rec[0].source_offset))
    )
    assert early == [(0, 10), (0, 11), (1, 20)]
    assert [(records[i][0].source_partition, records[i][0].source_offset) for i in last] == [(0, 12), (1, 21)]
    assert not any(rec[3] for rec in records)  # no header is added: positions go to the positions topic
    assert {(sp.partition, off) for sp, off in batch_next.items()} == {(0, 13), (1, 22)}


def test_a_rebuild_never_transforms_a_record_twice() -> None:
    """When an attempt fails part-way, building the unit again reuses what transform already returned."""
    calls: list[int] = []

    def transform(msg: Message) -> Message:
        calls.append(msg.source_offset)
        return msg

    b = builder(transform)
    unit = Unit([message(0, 0), message(0, 1), message(0, 2)])

    def fail_early(rec: Record) -> None:
        raise RuntimeError("the producer refused a record")

    with pytest.raises(RuntimeError):
        b.build(unit, fail_early)
    records, _, last = b.build(unit)
    assert calls == [0, 1, 2]
    assert [rec[0].source_offset for rec in records] == [0, 1, 2] and last == [2]
