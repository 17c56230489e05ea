"""Unit tests of the relay's side of the record path: polls cut into runs, events, the budget, positions (no broker)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaMessage

from relay.acks import LagClock
from relay.budget import ByteBudget
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.ownership import AllPartitions
from relay.readpositions import ReadPositions
from relay.relay import Relay
from relay.run import Run, consumed_size
from relay.target import TargetError

SP0, SP1 = SourcePartition("in", 0), SourcePartition("in", 1)


def rec(partition: int, offset: int, value: bytes | None = b"v" * 10, topic: str = "in") -> KafkaMessage:
    return KafkaMessage(topic=topic, partition=partition, offset=offset, value=value)


def event(partition: int, offset: int, code: int) -> KafkaMessage:
    msg = rec(partition, offset, value=None)
    msg.set_error(KafkaError(code))  # type: ignore[attr-defined]
    return msg


class _Target:
    """Records what it is handed; ``failure`` is raised by flush(0), as a failed target does."""

    def __init__(self) -> None:
        self.writes: list[tuple[list[Run], bool]] = []
        self.failure: Exception | None = None

    def write_runs(self, runs: Sequence[Run], more: bool) -> None:
        self.writes.append((list(runs), more))

    def flush(self, timeout: float | None = None) -> bool:
        if self.failure is not None:
            raise self.failure
        return True


def _relay(filters: Any = None, budget: int = 1 << 30) -> tuple[Relay, _Target, list[SourcePartition]]:
    """A Relay with only what the record path touches; offset events go to a list."""
    relay = Relay.__new__(Relay)
    target = _Target()
    out_of_range: list[SourcePartition] = []
    relay._reader = SimpleNamespace(cluster=SimpleNamespace(name="src"))  # type: ignore[assignment]
    relay.target = target  # type: ignore[assignment]
    relay.filters = filters
    relay._targets = {"in": "out"}
    relay.reads = ReadPositions()
    relay.reads.resumed({SP0: -1, SP1: -1})
    relay.budget = ByteBudget(budget)
    relay.stopping = threading.Event()
    relay.ownership = AllPartitions(None, relay)  # type: ignore[arg-type]
    relay._lag = LagClock(RelayMetrics().replication_lag)
    relay._gate = SimpleNamespace(out_of_range=lambda sp, err=None: out_of_range.append(sp))  # type: ignore[assignment]
    return relay, target, out_of_range


def test_a_poll_becomes_one_run_per_partition_and_positions_move_after_the_write() -> None:
    """Interleaved partitions become ordered runs; read positions and the budget follow them."""
    relay, target, _ = _relay()
    records = [rec(0, 0), rec(0, 1), rec(1, 0), rec(0, 2), rec(1, 1)]
    relay._handle(records, more=False)
    ((runs, more),) = target.writes
    assert [(r.source, [m.offset() for m in r.records]) for r in runs] == [(SP0, [0, 1, 2]), (SP1, [0, 1])]
    assert more is False
    assert relay.reads.snapshot() == {SP0: 3, SP1: 2}
    assert relay.budget.used == consumed_size(records)
    assert relay.reads.fingerprint(SP0) is not None and relay.reads.fingerprint(SP0).offset == 2  # type: ignore[union-attr]


def test_events_are_handled_after_the_records_before_them_are_written() -> None:
    """An end of partition past transaction markers becomes progress, handed over before the next records."""
    relay, target, out_of_range = _relay()
    eof = event(0, 5, KafkaError._PARTITION_EOF)  # records 0, 1, then markers up to 5
    reset = event(1, 8, KafkaError._AUTO_OFFSET_RESET)
    relay._handle([rec(0, 0), rec(0, 1), eof, rec(1, 7), reset, rec(1, 8)], more=True)
    written = [
        [(r.source.partition, [m.offset() for m in r.records], r.next) for r in runs] for runs, _ in target.writes
    ]
    assert written == [
        [(0, [0, 1], 2)],
        [(0, [], 5), (1, [7], 8)],
        [(1, [8], 9)],
    ]
    assert out_of_range == [SP1]
    assert relay.reads.snapshot() == {SP0: 5, SP1: 9}


def test_a_filter_that_drops_a_whole_run_still_moves_its_position() -> None:
    """Records a filter drops were read: their run goes to the target as progress, and the fingerprint is of
    the record read last, kept or not."""
    relay, target, _ = _relay(filters=lambda run: run.kept([False] * len(run)))
    relay._handle([rec(0, 0), rec(0, 1)], more=False)
    ((runs, _),) = target.writes
    assert [(len(r), r.next, r.size) for r in runs] == [(0, 2, 0)]
    assert relay.reads.get(SP0) == 2 and relay.budget.used == 0
    assert relay.reads.fingerprint(SP0).offset == 1  # type: ignore[union-attr]


def test_a_budget_refused_while_stopping_hands_nothing_more_of_the_poll() -> None:
    """Stopping while the budget is full: nothing after the refused part is handed over, no position moves."""
    relay, target, _ = _relay(budget=100)
    assert relay.budget.acquire(100, relay.stopping)
    relay.stopping.set()
    eof = event(1, 9, KafkaError._PARTITION_EOF)
    relay._handle([rec(0, 0), eof, rec(0, 1)], more=False)
    assert target.writes == []
    assert relay.reads.snapshot() == {SP0: -1, SP1: -1}


def test_a_target_failure_wakes_a_relay_waiting_for_budget() -> None:
    """A target that fails acknowledges nothing more: the wait ends and the target's failure is raised."""
    relay, target, _ = _relay(budget=100)
    assert relay.budget.acquire(100, relay.stopping)
    target.failure = TargetError("target dr: an object is already at that key")
    timer = threading.Timer(0.3, relay.budget.interrupt)
    timer.start()
    with pytest.raises(TargetError, match="already at that key"):
        relay._handle([rec(0, 0)], more=False)
    timer.cancel()
    assert target.writes == [] and relay.reads.get(SP0) == -1
