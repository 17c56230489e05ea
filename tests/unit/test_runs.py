"""Unit tests of runs, the unit of the record path: weights, cuts, splits, filters' subsets (no broker)."""

from __future__ import annotations

from confluent_kafka import Message as KafkaMessage

from relay.message import Message, SourcePartition, record_size
from relay.run import Run, consumed_size, cut

SP0, SP1 = SourcePartition("in", 0), SourcePartition("in", 1)


def rec(partition: int, offset: int, key: bytes | None = None, value: bytes | None = b"v" * 10,
        headers: list[tuple[str, bytes | None]] | None = None, topic: str = "in") -> KafkaMessage:  # fmt: skip
    return KafkaMessage(topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers)


def test_consumed_size_weighs_what_record_size_weighs() -> None:
    """A run takes from the budget exactly what the same records take as Messages: the bound is the same."""
    recs = [
        rec(0, 0),
        rec(0, 1, key=b"k" * 7),
        rec(0, 2, value=None),
        rec(0, 3, key=b"key", headers=[("a", b"xyz"), ("bb", None)]),
        rec(0, 4, value=b"", headers=[("h", b"")]),
    ]
    expected = sum(record_size(m.key(), m.value(), tuple(m.headers() or ())) for m in recs)
    assert consumed_size(recs) == expected
    assert consumed_size([]) == 0
    run = Run.consumed("src", SP0, "out", recs)
    assert run.size == expected and run.next == 5 and sum(run.weights()) == expected


def test_cut_groups_interleaved_partitions_in_order() -> None:
    """Interleaved stretches of partitions become one ordered run each, bound for the route's target topic."""
    runs = cut("src", [rec(0, 0), rec(0, 1), rec(1, 0), rec(0, 2), rec(1, 1), rec(1, 2)], {"in": "out"})
    assert [(r.source, [m.offset() for m in r.records], r.next, r.target) for r in runs] == [
        (SP0, [0, 1, 2], 3, "out"),
        (SP1, [0, 1, 2], 3, "out"),
    ]


def test_cut_keeps_topics_apart() -> None:
    """With more than one source topic, partition 0 of one is not partition 0 of the other."""
    runs = cut("src", [rec(0, 0), rec(0, 5, topic="b"), rec(0, 1)], {"in": "out", "b": "bout"})
    assert {(r.source, r.target): [m.offset() for m in r.records] for r in runs} == {
        (SP0, "out"): [0, 1],
        (SourcePartition("b", 0), "bout"): [5],
    }


def test_split_keeps_order_positions_and_bytes() -> None:
    """split(n): the head ends after its last record, the tail keeps the run's next; nothing weighed twice."""
    run = Run.consumed("src", SP0, "out", [rec(0, o, value=b"x" * o) for o in range(5)])
    head, tail = run.split(2)
    assert [m.offset() for m in head.records] == [0, 1] and head.next == 2
    assert [m.offset() for m in tail.records] == [2, 3, 4] and tail.next == 5
    assert head.size + tail.size == run.size and head.size == consumed_size(head.records)


def test_kept_keeps_the_position_of_what_was_dropped() -> None:
    """A filter's subset ends where the run ended: dropped records were read; all dropped is progress."""
    run = Run.consumed("src", SP0, "out", [rec(0, o) for o in range(4)])
    some = run.kept([True, False, True, False])
    assert [m.offset() for m in some.records] == [0, 2] and some.next == 4 and some.size == consumed_size(some.records)
    none = run.kept([False] * 4)
    assert not none.records and none.next == 4 and none.size == 0 and none.first_offset() is None
    assert run.kept([True] * 4) is run


def test_messages_are_built_once_with_every_field() -> None:
    """A Message per record is built on first demand only, with key, value, headers, coordinates and timestamp."""
    raw = rec(1, 7, key=b"k", value=b"", headers=[("a", None), ("a", b"2")])
    run = Run.consumed("west", SP1, "out", [raw])
    (msg,) = run.messages()
    assert run.messages()[0] is msg
    assert (msg.key, msg.value, msg.headers, msg.topic) == (b"k", b"", (("a", None), ("a", b"2")), "out")
    assert (msg.source_cluster, msg.source_topic, msg.source_partition, msg.source_offset) == ("west", "in", 1, 7)
    assert msg.size == record_size(b"k", b"", msg.headers) and run.coordinates(0) == "west/in/1@7"


def test_a_built_run_holds_messages_and_splits_like_a_consumed_one() -> None:
    """A run a transform keeps as Messages lets the consumed records go and keeps next and size."""
    run = Run.consumed("src", SP0, "out", [rec(0, o) for o in range(3)])
    built = run.built(list(run.messages()))
    assert built.is_built and all(isinstance(m, Message) for m in built.records)
    assert (built.next, built.size, built.first_offset()) == (3, run.size, 0)
    head, tail = built.split(1)
    assert head.next == 1 and tail.next == 3 and head.size + tail.size == run.size
    assert Run.progress("src", SP0, "out", 9).next == 9 and not Run.progress("src", SP0, "out", 9).is_built
