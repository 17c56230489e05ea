"""Unit tests of the passthrough fast path's pieces: batch weights, splits, units, grouping, events (no broker)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from relay.message import RawBatch, SourcePartition, raw_size, record_size
from relay.settings import TopicConfig
from targets.kafka.batches import BatchBuilder

SP0, SP1 = SourcePartition("in", 0), SourcePartition("in", 1)


def rec(partition: int, offset: int, key: bytes | None = None, value: bytes | None = b"v" * 10,
        headers: list[tuple[str, bytes | None]] | None = None, topic: str = "in") -> KafkaMessage:  # fmt: skip
    return KafkaMessage(topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers)


def batch(*parts: tuple[SourcePartition, list[KafkaMessage]]) -> RawBatch:
    return RawBatch("src", dict(parts), {sp: raw_size(recs) for sp, recs in parts})


def test_raw_size_weighs_what_record_size_weighs() -> None:
    """A raw batch takes from the budget exactly what the same records take as Messages: the bound is the same."""
    recs = [
        rec(0, 0),
        rec(0, 1, key=b"k" * 7),
        rec(0, 2, value=None),
        rec(0, 3, key=b"key", headers=[("a", b"xyz"), ("bb", None)]),
        rec(0, 4, value=b"", headers=[("h", b"")]),
    ]
    expected = sum(record_size(m.key(), m.value(), tuple(m.headers() or ())) for m in recs)
    assert raw_size(recs) == expected
    assert raw_size([]) == 0


def test_split_keeps_order_counts_and_bytes() -> None:
    """split(n) takes whole parts first, then the start of one; nothing is lost or weighed twice."""
    whole = batch((SP0, [rec(0, o, value=b"x" * o) for o in range(5)]), (SP1, [rec(1, o) for o in range(3)]))
    head, tail = whole.split(6)
    assert (head.count, tail.count) == (6, 2)
    assert [m.offset() for m in head.parts[SP0]] == [0, 1, 2, 3, 4] and [m.offset() for m in head.parts[SP1]] == [0]
    assert [m.offset() for m in tail.parts[SP1]] == [1, 2] and SP0 not in tail.parts
    assert head.size + tail.size == whole.size
    assert head.sizes[SP1] == raw_size(head.parts[SP1]) and tail.sizes[SP1] == raw_size(tail.parts[SP1])
    first, rest = whole.split(2)
    assert [m.offset() for m in first.parts[SP0]] == [0, 1] and [m.offset() for m in rest.parts[SP0]] == [2, 3, 4]


def test_only_keeps_the_partitions_asked_for() -> None:
    """only() drops the parts of other partitions (group mode: partitions revoked or lost)."""
    whole = batch((SP0, [rec(0, 0)]), (SP1, [rec(1, 0), rec(1, 1)]))
    kept = whole.only(lambda sp: sp == SP1)
    assert list(kept.parts) == [SP1] and kept.count == 2 and kept.size == whole.sizes[SP1]


def test_raw_unit_targets_and_positions() -> None:
    """preserve keeps the source partition, a number sends every record there; positions follow each partition's
    newest record; a unit may be limited to one source partition (group mode)."""
    builder = BatchBuilder([TopicConfig("in", "out", "preserve"), TopicConfig("b", "fixed", 3)], {"out": 2, "fixed": 4})
    spb = SourcePartition("b", 1)
    one = batch((SP0, [rec(0, 5), rec(0, 6)]), (spb, [rec(1, 40, topic="b")]))
    two = batch((SP0, [rec(0, 7)]), (SP1, [rec(1, 9)]))
    unit = builder.raw_unit([one, two])
    assert [(t, p, [[m.offset() for m in recs] for recs in lists]) for t, p, lists in unit.runs] == [
        ("out", 0, [[5, 6], [7]]),
        ("fixed", 3, [[40]]),
        ("out", 1, [[9]]),
    ]
    assert unit.batch_next == {SP0: 8, spb: 41, SP1: 10} and unit.count == 5
    only = builder.raw_unit([one, two], only=SP1)
    assert [(t, p) for t, p, _ in only.runs] == [("out", 1)] and only.batch_next == {SP1: 10}


def test_key_partitioning_never_takes_the_fast_path() -> None:
    """partition: key chooses per record; a raw unit for it is refused outright."""
    builder = BatchBuilder([TopicConfig("in", "out", "key")], {"out": 2})
    with pytest.raises(ValueError, match="partition: key"):
        builder.raw_unit([batch((SP0, [rec(0, 0)]))])


class _Reader:
    class cluster:
        name = "src"


class _Target:
    def __init__(self) -> None:
        self.batches: list[RawBatch] = []

    def passthrough(self, on_ack: Any) -> str | None:
        return None

    def write_batch(self, batch: RawBatch) -> None:
        self.batches.append(batch)


def _relay(topics: Sequence[str]) -> tuple[Any, _Target, list[tuple[str, Any]]]:
    """A Relay with only what _handle_raw touches: a reader, a target, a budget, event hooks recorded."""
    from relay.budget import ByteBudget
    from relay.ownership import AllPartitions
    from relay.relay import Relay

    relay = Relay.__new__(Relay)
    target = _Target()
    events: list[tuple[str, Any]] = []
    relay._reader = _Reader()  # type: ignore[assignment]
    relay._batch_target = target  # type: ignore[assignment]
    relay._progress = None
    relay._only_topic = topics[0] if len(topics) == 1 else None
    relay._next, relay._fingerprints, relay._ends, relay._done = {}, {}, {}, set()
    relay.budget = ByteBudget(1 << 30)
    relay.stopping = threading.Event()
    relay.ownership = AllPartitions(None, relay)  # type: ignore[arg-type]
    relay._at_end = lambda sp, off: events.append(("eof", (sp, off, dict(relay._next))))  # type: ignore[method-assign]
    relay._gate = SimpleNamespace(out_of_range=lambda sp, err=None: events.append(("range", sp)))  # type: ignore[assignment]
    return relay, target, events


def _event(partition: int, offset: int, code: int, topic: str = "in") -> KafkaMessage:
    msg = rec(partition, offset, value=None, topic=topic)
    msg.set_error(KafkaError(code))  # type: ignore[attr-defined]
    return msg


def test_the_loop_groups_by_partition_and_advances_positions_per_batch() -> None:
    """Interleaved runs of partitions become one ordered part each; positions and the budget follow."""
    relay, target, _ = _relay(["in"])
    records = [rec(0, 0), rec(0, 1), rec(1, 0), rec(0, 2), rec(1, 1), rec(1, 2)]
    relay._handle_raw(records)
    (written,) = target.batches
    assert {sp: [m.offset() for m in recs] for sp, recs in written.parts.items()} == {SP0: [0, 1, 2], SP1: [0, 1, 2]}
    assert relay._next == {SP0: 3, SP1: 3}
    assert relay.budget.used == written.size == raw_size(records)


def test_several_topics_are_kept_apart() -> None:
    """With more than one source topic, partition 0 of one is not partition 0 of the other."""
    relay, target, _ = _relay(["in", "b"])
    relay._handle_raw([rec(0, 0), rec(0, 5, topic="b"), rec(0, 1)])
    (written,) = target.batches
    assert {sp: [m.offset() for m in recs] for sp, recs in written.parts.items()} == {
        SP0: [0, 1],
        SourcePartition("b", 0): [5],
    }


def test_error_events_are_handled_in_order_with_the_records_before_them_written_first() -> None:
    """An end-of-partition or offset event sees the positions of every record read before it."""
    relay, target, events = _relay(["in"])
    eof, reset = _event(0, 2, KafkaError._PARTITION_EOF), _event(1, 8, KafkaError._AUTO_OFFSET_RESET)
    relay._handle_raw([rec(0, 0), rec(0, 1), eof, rec(1, 7), reset, rec(1, 8)])
    assert [e[0] for e in events] == ["eof", "range"]
    seen = events[0][1]
    assert seen[0] == SP0 and seen[1] == 2 and seen[2] == {SP0: 2}
    written = [sorted((sp.partition, m.offset()) for sp, recs in b.parts.items() for m in recs) for b in target.batches]
    assert written == [
        [(0, 0), (0, 1)],
        [(1, 7)],
        [(1, 8)],
    ]
