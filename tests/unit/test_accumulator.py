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
from targets.kafka.plan import Committed, Plan, Planning
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


def settled(plan: Plan, offsets: dict[tuple[str, int], int]) -> Committed:
    """What the sender reports for ``plan`` committed with ``offsets``."""
    return Committed(plan.written(), plan.entries(offsets))


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
    acc.committed(first, settled(first, {("out", 0): 2}))
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
    acc.committed(plan, settled(plan, {("out", 0): 4}))
    acc.sent()
    assert [len(r) for r in acks.runs] == [5] and not acc.flush(0)  # the map point of 0-4 is not written yet
    (late,) = acc.take_plans() or []
    assert late.extra == {SP0: Entry(5, ((5, 5),))} and not late.runs
    acc.committed(late, settled(late, {}))
    acc.sent()
    assert acc.flush(0)
    acc.add([(Run.progress("src", SP0, "out", 5), None)], more=True)
    taken: list[bool] = []

    def sender() -> None:  # what the sender does with a plan that moves nothing: commits nothing, reports it
        (stale,) = acc.take_plans() or []
        taken.append(stale.empty)
        acc.committed(stale, Committed({}, {}))
        acc.sent()

    threading.Thread(target=sender, daemon=True).start()
    assert acc.flush(5) and taken == [True]


def test_a_map_point_rides_with_the_next_transaction_and_the_position_never_waits() -> None:
    """A committed plan writes its position at once; its map point is written by the next plan."""
    acc, _ = accumulator(linger=0.01)
    acc.resumed({SP0: Entry(0)}, {})
    acc.add([(run(0, range(5)), None)], more=False)
    (first,) = acc.take_plans() or []
    assert first.written() == {SP0: Entry(5)}
    acc.committed(first, settled(first, {("out", 0): 4}))
    acc.sent()
    acc.add([(run(0, range(5, 8)), None)], more=False)
    (second,) = acc.take_plans() or []
    assert second.written() == {SP0: Entry(8, ((5, 5),))}
    acc.committed(second, settled(second, {("out", 0): 8}))
    acc.sent()
    (late,) = acc.take_plans() or []
    assert late.written() == {SP0: Entry(8, ((5, 5), (8, 9)))}


def committed_two_records() -> Accumulator:
    """An accumulator whose first plan, records 0-1 of partition 0 at target offsets 0-1, committed."""
    acc, _ = accumulator(linger=0.01)
    acc.resumed({SP0: Entry(0)}, {})
    acc.add([(run(0, range(2)), None)], more=False)
    (first,) = acc.take_plans() or []
    acc.committed(first, settled(first, {("out", 0): 1}))
    acc.sent()
    return acc


def test_late_map_points_alone_wait_a_while_then_commit() -> None:
    """With nothing else to carry them, late entries get a transaction of their own after about a second."""
    acc = committed_two_records()
    started = time.monotonic()
    (late,) = acc.take_plans() or []
    assert time.monotonic() - started >= 0.9 and late.extra == {SP0: Entry(2, ((2, 2),))}


def test_an_entry_read_back_drops_a_late_one_rather_than_write_its_older_position() -> None:
    """Positions read again (another instance wrote meanwhile) replace a late entry, which is never written."""
    acc = committed_two_records()
    acc.resumed({SP0: Entry(50, ((50, 60),))}, {})
    assert acc.flush(0)


def test_an_unwritten_entry_a_plan_moved_on_is_not_written_again() -> None:
    """An imported entry that a plan with records advanced is done with: no later plan writes its old position."""
    acc, _ = accumulator(linger=0.01)
    acc.resumed({SP0: Entry(0)}, {SP0: Entry(0)})
    acc.add([(run(0, range(3)), None)], more=False)
    (first,) = acc.take_plans() or []
    assert first.extra == {SP0: Entry(0)} and first.written() == {SP0: Entry(3)}
    acc.committed(first, settled(first, {("out", 0): 2}))
    acc.sent()
    (late,) = acc.take_plans() or []
    assert late.extra == {SP0: Entry(3, ((3, 3),))}


def test_a_failure_gives_up_late_map_points_rather_than_write_old_positions_after_a_restart() -> None:
    """After a target restart no late entry is written: positions are read back first, and may be newer."""
    acc = committed_two_records()
    acc.fail(TargetRestart("fenced"))
    with pytest.raises(TargetRestart):
        acc.flush(0)
    assert acc.flush(0)
