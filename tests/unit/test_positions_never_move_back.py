"""A position never moves back: found by the chaos soak (docs/reliability.md, seed 15).

After a failover to a standby that trailed the relay's position, the reader went back to the
standby's end and read records the target had committed already. The target committed them again
and wrote their position, which had moved back; the positions topic then held an entry whose map
does not grow, that :func:`decode` refuses, so no relay could start again (exit 1 on every start).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from relay.message import Message, SourcePartition
from relay.target import TargetError
from targets.kafka.batches import Unit
from targets.kafka.positions import Entry, PositionError, decode, encode
from targets.kafka.target import KafkaTarget


def test_an_entry_moving_back_is_refused_instead_of_written() -> None:
    entry = Entry(1929, ((1927, 2081), (1929, 2084)))
    with pytest.raises(PositionError, match="move back from 1929 to 1887"):
        entry.advanced(1887, 2087)
    with pytest.raises(PositionError):
        entry.advanced(1887, None)


def test_what_the_chaos_run_wrote_is_what_decode_refuses() -> None:
    """The bytes of the entry seen in the run: the guard keeps such a record from ever being written."""
    raw = b'{"v":1,"next":1887,"map":[[1927,2081],[1929,2084],[1887,2087]]}'
    with pytest.raises(PositionError, match="do not grow"):
        decode(raw)


def test_moving_forward_or_staying_put_without_a_point_still_works() -> None:
    entry = Entry(1929, ((1929, 2084),))
    assert entry.advanced(1950, 2110).map[-1] == (1950, 2110)
    assert decode(encode(entry.advanced(1950, 2110))) == entry.advanced(1950, 2110)
    assert Entry(-1).advanced(0, None) == Entry(0)
    assert entry.advanced(1929, 2090) is entry


def _unit(*offsets: tuple[int, int]) -> Unit:
    return Unit([Message(b"k", b"v", (), "events", "west", "events", p, o, 0, 2) for p, o in offsets])


def _refuse(unit: Unit, current: dict[SourcePartition, Entry]) -> None:
    target = SimpleNamespace(_config=SimpleNamespace(cluster=SimpleNamespace(name="dr")))
    KafkaTarget._refuse_reread(target, unit, current)  # type: ignore[arg-type]


def test_a_batch_starting_below_the_committed_position_is_refused() -> None:
    """The batch that duplicated records in the run: the standby's end (2000) below the position (3000)."""
    current = {SourcePartition("events", 0): Entry(3000), SourcePartition("events", 1): Entry(10)}
    with pytest.raises(TargetError, match=r"events/0: records from offset 2000 were read again below .* 3000"):
        _refuse(_unit((1, 10), (0, 2000), (0, 2001), (0, 3400)), current)


def test_a_batch_at_or_after_the_committed_position_passes() -> None:
    current = {SourcePartition("events", 0): Entry(3000), SourcePartition("events", 1): Entry(-1)}
    _refuse(_unit((0, 3000), (1, 0), (0, 3001)), current)
    _refuse(_unit((0, 3500)), current)  # a gap (retention, transaction markers) is not a re-read
