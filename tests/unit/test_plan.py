"""Unit tests of how the Kafka target plans a transaction (no broker: nothing is produced here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import pytest
from confluent_kafka import Message as KafkaMessage

from relay.message import Message, SourcePartition
from relay.run import Run
from relay.settings import TopicConfig
from relay.target import TargetError
from targets.kafka.partitioner import key_partition
from targets.kafka.plan import Planning, plan
from targets.kafka.positions import Entry

SP0, SP1 = SourcePartition("in", 0), SourcePartition("in", 1)
ROUTES = {
    "in": TopicConfig("in", "out", "preserve"),
    "b": TopicConfig("b", "fixed", 3),
    "k": TopicConfig("k", "kk", "key"),
}
COUNTS = {"out": 2, "fixed": 4, "kk": 3, "dlq": 2}


def rec(topic: str, partition: int, offset: int, key: bytes | None = None) -> KafkaMessage:
    return KafkaMessage(topic=topic, partition=partition, offset=offset, key=key, value=b"v")


def run(topic: str, partition: int, offsets: Sequence[int], keys: Sequence[bytes | None] = ()) -> Run:
    keys = list(keys) or [None] * len(offsets)
    records = [rec(topic, partition, o, k) for o, k in zip(offsets, keys, strict=True)]
    return Run.consumed("src", SourcePartition(topic, partition), ROUTES[topic].target, records)


def test_chunks_follow_the_partition_mode_and_keep_source_order() -> None:
    """preserve keeps the source partition, a number sends a run there, key hashes each key like the Java client."""
    keys = [b"a", b"b", b"c", b"a"]
    (only,) = plan(
        [run("in", 0, [5, 6]), run("b", 1, [40]), run("in", 0, [7]), run("k", 0, [1, 2, 3, 4], keys)],
        {},
        {},
        Planning(ROUTES, COUNTS),
    )
    chunks = {(c.topic, c.partition): [[m.offset() for m in recs] for recs in c.runs] for c in only.chunks}
    assert chunks[("out", 0)] == [[5, 6], [7]] and chunks[("fixed", 3)] == [[40]]
    by_key = {p: [o for recs in chunks[("kk", p)] for o in recs] for p in range(3) if ("kk", p) in chunks}
    expected: dict[int, list[int]] = {}
    for o, k in zip([1, 2, 3, 4], keys, strict=True):
        expected.setdefault(key_partition(k, 3), []).append(o)
    assert by_key == expected
    assert only.moves == {SP0: 8, SourcePartition("b", 1): 41, SourcePartition("k", 0): 5}
    assert only.mirrors == {SP0: ("out", 0)} and only.made is None and only.records == 8


def test_progress_is_a_move_without_records_and_stale_progress_moves_nothing() -> None:
    """A run without records moves its partition; one the committed entry already reached moves nothing."""
    progress = Run.progress("src", SP1, "out", 30)
    stale = Run.progress("src", SP0, "out", 10)
    (only,) = plan([progress, stale], {SP0: Entry(12), SP1: Entry(20)}, {}, Planning(ROUTES, COUNTS))
    assert only.moves == {SP1: 30} and not only.chunks and only.records == 0
    assert only.entries({}) == {SP1: Entry(30)}
    (idle,) = plan([stale], {SP0: Entry(12)}, {}, Planning(ROUTES, COUNTS))
    assert idle.empty and idle.runs == (stale,)


def test_entries_grow_the_offset_map_from_the_offsets_records_got() -> None:
    """Under preserve the entry gains a map point at the next target offset of its mirror partition."""
    (only,) = plan([run("in", 0, [5, 6])], {SP0: Entry(5, ((5, 100),))}, {}, Planning(ROUTES, COUNTS))
    assert only.entries({("out", 0): 101}) == {SP0: Entry(7, ((5, 100), (7, 102)))}


def test_written_entries_move_without_the_map_point_their_records_make() -> None:
    """Before the offsets are known a filled partition moves without a point; one without records gets its point."""
    runs = [run("in", 0, [5, 6]), Run.progress("src", SP1, "out", 30)]
    current = {SP0: Entry(5, ((5, 100),)), SP1: Entry(20, ((20, 7),))}
    (only,) = plan(runs, current, {}, Planning(ROUTES, COUNTS))
    assert only.filled == {SP0}
    assert only.written() == {SP0: Entry(7, ((5, 100),)), SP1: Entry(30, ((20, 7), (30, 7)))}


def test_a_run_below_the_committed_position_is_refused() -> None:
    """A run that starts below its partition's committed position would duplicate records: refused."""
    with pytest.raises(TargetError, match=r"target dr: in/0: records from offset 2000 were read again below .* 3000"):
        plan(
            [run("in", 1, [10]), run("in", 0, [2000, 2001])],
            {SP0: Entry(3000)},
            {},
            Planning(ROUTES, COUNTS, cluster="dr"),
        )
    plan([run("in", 0, [3500])], {SP0: Entry(3000)}, {}, Planning(ROUTES, COUNTS))  # a gap is not a re-read


def test_group_mode_plans_one_transaction_per_source_partition() -> None:
    """Each source partition has a producer of its own: its runs, its unwritten entry, its plan."""
    plans = plan(
        [run("in", 0, [1]), run("in", 1, [4]), run("in", 0, [2])],
        {},
        {SP1: Entry(4), SourcePartition("b", 0): Entry(9)},
        Planning(ROUTES, COUNTS, per_partition=True),
    )
    by_key = {p.key: ([[m.offset() for m in r.records] for r in p.runs], dict(p.extra)) for p in plans}
    assert by_key == {
        SP0: ([[1], [2]], {}),
        SP1: ([[4]], {SP1: Entry(4)}),
        SourcePartition("b", 0): ([], {SourcePartition("b", 0): Entry(9)}),
    }


class _Upper:
    """A transform that counts its calls and sends offset 13 to the dead-letter topic."""

    extra_topics = ("dlq",)

    def __init__(self) -> None:
        self.calls: list[int] = []

    def outputs(self, run: Run) -> Iterator[Message]:
        for msg in run.messages():
            self.calls.append(msg.source_offset)
            topic = "dlq" if msg.source_offset == 13 else msg.topic
            yield dataclasses.replace(msg, value=(msg.value or b"").upper(), topic=topic)


def test_made_records_are_made_once_and_given_again_on_a_retry() -> None:
    """A transform's outputs are placed as they are made and kept: a retried transaction re-sends, never re-makes."""
    transform = _Upper()
    (only,) = plan([run("in", 1, [11, 12, 13])], {}, {}, Planning(ROUTES, COUNTS, transform=transform))  # type: ignore[arg-type]
    assert only.made is not None and not only.chunks
    first = iter(only.made)
    assert next(first).message.source_offset == 11
    del first  # an attempt that failed part-way
    placed = [(p.message.source_offset, p.topic, p.partition, p.message.value) for p in only.made]
    assert placed == [(11, "out", 1, b"V"), (12, "out", 1, b"V"), (13, "dlq", 1, b"V")]
    assert [(p.message.source_offset) for p in only.made] == [11, 12, 13]
    assert transform.calls == [11, 12, 13]


def test_build_messages_makes_a_message_per_record_without_a_transform() -> None:
    """fast_path: false: every record is produced from a Message, in the partition the route says."""
    (only,) = plan([run("in", 0, [1, 2])], {}, {}, Planning(ROUTES, COUNTS, build_messages=True))
    assert only.made is not None
    assert [(p.message.source_offset, p.topic, p.partition) for p in only.made] == [(1, "out", 0), (2, "out", 0)]
