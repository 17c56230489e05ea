"""Unit tests of the Kafka target's accumulator: batches cut, due, failed and committed (no broker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Message as KafkaMessage

from relay.message import SourcePartition
from relay.run import Run
from relay.settings import TopicConfig
from relay.target import TargetRestart
from targets.kafka.accumulator import Accumulator
from targets.kafka.plan import Planning
from targets.kafka.positions import Entry
from targets.kafka.settings import BatchConfig

SP0, SP1 = SourcePartition("in", 0), SourcePartition("in", 1)
PLANNING = Planning({"in": TopicConfig("in", "out", "preserve")}, {"out": 2})


def run(partition: int, offsets: range, value: bytes = b"v" * 36) -> Run:
    recs = [KafkaMessage(topic="in", partition=partition, offset=o, value=value) for o in offsets]
    return Run.consumed("src", SourcePartition("in", partition), "out", recs)


class _Acks:
    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.failures = 0

    def acked(self, runs: Sequence[Run]) -> None:
        self.runs.extend(runs)

    def failed(self) -> None:
        self.failures += 1


def accumulator(**batch: float) -> tuple[Accumulator, _Acks]:
    acc = Accumulator(BatchConfig(**batch), PLANNING)  # type: ignore[arg-type]
    acks = _Acks()
    acc.start(acks)
    return acc, acks


def test_a_run_that_does_not_fit_is_split_and_waits_for_the_sender() -> None:
    """max_records cuts a run in two; the rest waits until the sender took the full batch."""
    acc, _ = accumulator(max_records=3, linger=10)
    adder = threading.Thread(target=acc.add, args=([(run(0, range(5)), None)], True))
    adder.start()
    (first,) = acc.take_plans() or []
    assert [[m.offset() for m in r.records] for r in first.runs] == [[0, 1, 2]] and first.moves == {SP0: 3}
    acc.committed(first, first.entries({("out", 0): 2}))
    acc.sent()
    adder.join(2)
    assert not adder.is_alive()
    acc.flush(0)
    assert acc.flush(0) is False  # records 3 and 4 are still to commit


def test_weights_cut_batches_by_bytes() -> None:
    """A transform's weights, not the records' sizes, decide where max_bytes cuts."""
    acc, _ = accumulator(max_records=100, max_bytes=250, linger=10)
    threading.Thread(target=acc.add, args=([(run(0, range(4)), [100, 100, 100, 100])], True), daemon=True).start()
    (first,) = acc.take_plans() or []
    assert [len(r) for r in first.runs] == [2]


def test_a_batch_is_due_at_once_when_the_source_has_nothing_more() -> None:
    """more=False: a small batch goes now instead of after linger."""
    acc, _ = accumulator(linger=30)
    acc.add([(run(0, range(2)), None)], more=False)
    started = time.monotonic()
    (plan,) = acc.take_plans() or []
    assert time.monotonic() - started < 1 and plan.records == 2


def test_progress_alone_waits_then_commits_without_records() -> None:
    """A run without records is committed alone only after a while (a filter dropping everything)."""
    acc, _ = accumulator(linger=0.01)
    acc.add([(Run.progress("src", SP1, "out", 40), None)], more=False)
    started = time.monotonic()
    (plan,) = acc.take_plans() or []
    assert time.monotonic() - started >= 0.9
    assert plan.moves == {SP1: 40} and plan.records == 0


def test_a_restart_drops_the_batch_being_filled_with_its_progress_and_is_raised_once() -> None:
    """Runs and progress handed in before a restart never commit; the next add raises it, the one after works."""
    acc, acks = accumulator(linger=30)
    acc.add([(run(0, range(3)), None), (Run.progress("src", SP1, "out", 99), None)], more=True)
    acc.fail(TargetRestart("fenced"))
    assert acks.failures == 1
    with pytest.raises(TargetRestart):
        acc.add([(Run.progress("src", SP1, "out", 120), None)], more=True)
    acc.add([(run(0, range(3)), None)], more=False)
    (plan,) = acc.take_plans() or []
    assert plan.moves == {SP0: 3}  # neither 99 nor 120 for partition 1


def test_committed_entries_move_and_runs_are_acknowledged() -> None:
    """A committed plan's entries become current and its runs go to acks; later progress below them is stale."""
    acc, acks = accumulator(linger=0.01)
    acc.resumed({SP0: Entry(0)}, {SP1: Entry(7)})
    acc.add([(run(0, range(5)), None)], more=False)
    (plan,) = acc.take_plans() or []
    assert plan.extra == {SP1: Entry(7)}
    acc.committed(plan, plan.entries({("out", 0): 4}))
    acc.sent()
    assert [len(r) for r in acks.runs] == [5] and acc.flush(0)
    acc.add([(Run.progress("src", SP0, "out", 5), None)], more=True)
    taken: list[bool] = []

    def sender() -> None:  # what the sender does with a plan that moves nothing: commits nothing, reports it
        (stale,) = acc.take_plans() or []
        taken.append(stale.empty)
        acc.committed(stale, {})
        acc.sent()

    threading.Thread(target=sender, daemon=True).start()
    assert acc.flush(5) and taken == [True]
