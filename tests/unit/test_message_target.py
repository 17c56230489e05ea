"""Unit tests of the adapter that drives a custom, one-Message-at-a-time target with runs (no broker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from confluent_kafka import Message as KafkaMessage

from relay.adapter import MessageTarget
from relay.message import Message, Offsets, SourcePartition
from relay.run import Run
from relay.target import AckCallback, TargetRestart

SP0, SP1 = SourcePartition("in", 0), SourcePartition("in", 1)


def run(partition: int, offsets: range) -> Run:
    recs = [KafkaMessage(topic="in", partition=partition, offset=o, value=b"v") for o in offsets]
    return Run.consumed("src", SourcePartition("in", partition), "out", recs)


class _Custom:
    """A custom target that acknowledges only when told to, and remembers progress."""

    def __init__(self) -> None:
        self.written: list[Message] = []
        self.progressed: list[Mapping[SourcePartition, int]] = []
        self.on_ack: AckCallback | None = None
        self.restart = False

    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        return {}

    def start(self, on_ack: AckCallback) -> None:
        self.on_ack = on_ack

    def write(self, message: Message) -> None:
        if self.restart:
            raise TargetRestart("dropped everything")
        self.written.append(message)

    def progress(self, positions: Mapping[SourcePartition, int]) -> None:
        self.progressed.append(dict(positions))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass


class _Acks:
    def __init__(self) -> None:
        self.runs: list[Run] = []

    def acked(self, runs: Sequence[Run]) -> None:
        self.runs.extend(runs)

    def failed(self) -> None:
        pass


def test_runs_are_written_as_messages_and_acknowledged_once_all_their_records_are() -> None:
    """Each record becomes one Message; a run is acknowledged, in order, once its last record is."""
    custom, acks = _Custom(), _Acks()
    adapter = MessageTarget(custom)
    adapter.start(acks)
    first, second, progress = run(0, range(3)), run(0, range(3, 5)), Run.progress("src", SP1, "out", 7)
    adapter.write_runs([first, second, progress], more=False)
    assert [(m.source_partition, m.source_offset, m.topic) for m in custom.written] == [
        (0, 0, "out"), (0, 1, "out"), (0, 2, "out"), (0, 3, "out"), (0, 4, "out"),
    ]  # fmt: skip
    assert custom.progressed == [{SP0: 3}, {SP0: 5}, {SP1: 7}]
    assert acks.runs == [progress]  # no record to wait for
    assert custom.on_ack is not None
    custom.on_ack(custom.written[:2])
    assert acks.runs == [progress]
    custom.on_ack(custom.written[2:4])
    assert acks.runs == [progress, first]
    custom.on_ack(custom.written[4:])
    assert acks.runs == [progress, first, second]


def test_a_restart_forgets_what_was_written_and_not_acknowledged() -> None:
    """After the target dropped what it held, old runs wait for nothing: later runs are acknowledged."""
    custom, acks = _Custom(), _Acks()
    adapter = MessageTarget(custom)
    adapter.start(acks)
    adapter.write_runs([run(0, range(2))], more=True)
    custom.restart = True
    try:
        adapter.write_runs([run(0, range(2, 3))], more=True)
        raise AssertionError("the restart was not raised")
    except TargetRestart:
        pass
    custom.restart = False
    again = run(0, range(2))
    adapter.write_runs([again], more=False)
    assert custom.on_ack is not None
    custom.on_ack(custom.written[-2:])
    assert acks.runs == [again]
