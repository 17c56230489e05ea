"""A position never moves back: an entry whose map does not grow is refused before it is written.

A relay that read records the target had committed already (a failover to a standby that
trailed) would write a position that moved back; :func:`decode` refuses such an entry, so no
relay could start from the positions topic again. The plan refuses such records in the first
place (tests/unit/test_plan.py); the entry refuses to move back as a second guard.
"""

from __future__ import annotations

import pytest

from targets.kafka.positions import Entry, PositionError, decode, encode


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
