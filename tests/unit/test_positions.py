"""Unit tests of targets.kafka.positions: entries, their wire format, the bounded offset map and translation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.message import SourcePartition
from targets.kafka.positions import (
    DENSE,
    MAX_OFFSET,
    Entry,
    PositionError,
    advance,
    decode,
    encode,
    key,
    parse_key,
    thin,
    translate,
)

OFFSETS = st.integers(0, MAX_OFFSET)


@st.composite
def maps(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """Offset maps as the relay builds them: source and target offsets that grow."""
    steps = draw(st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 10_000)), max_size=40))
    points, s, t = [], 0, 0
    for ds, dt in steps:
        s, t = s + ds, t + dt
        points.append((s, t))
    return tuple(points)


def test_value_is_the_documented_json() -> None:
    """An entry is written as compact JSON with its version, next offset and map."""
    assert encode(Entry(1234, ((1000, 980), (1234, 1214)))) == b'{"v":1,"next":1234,"map":[[1000,980],[1234,1214]]}'
    assert encode(Entry(-1)) == b'{"v":1,"next":-1}'


@given(st.integers(-1, MAX_OFFSET), maps())
def test_encode_decode_round_trip(next_offset: int, points: tuple[tuple[int, int], ...]) -> None:
    """decode(encode(entry)) is the entry."""
    entry = Entry(max(next_offset, points[-1][0] if points else -1), points)
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff", id="not-utf8"),
        pytest.param(b"[1]", id="not-an-object"),
        pytest.param(b'{"next":5}', id="no-version"),
        pytest.param(b'{"v":2,"next":5}', id="newer-version"),
        pytest.param(b'{"v":1}', id="no-next"),
        pytest.param(b'{"v":1,"next":"5"}', id="next-a-string"),
        pytest.param(b'{"v":1,"next":true}', id="next-a-bool"),
        pytest.param(b'{"v":1,"next":-2}', id="next-below-minus-one"),
        pytest.param(b'{"v":1,"next":9999999999999999999}', id="next-beyond-any-offset"),
        pytest.param(b'{"v":1,"next":5,"map":{}}', id="map-not-a-list"),
        pytest.param(b'{"v":1,"next":5,"map":[[1]]}', id="point-not-a-pair"),
        pytest.param(b'{"v":1,"next":5,"map":[[2,1],[1,2]]}', id="source-offsets-shrink"),
        pytest.param(b'{"v":1,"next":5,"map":[[1,2],[2,1]]}', id="target-offsets-shrink"),
        pytest.param(b'{"v":1,"next":5,"map":[[6,1]]}', id="map-past-position"),
        pytest.param(b'{"v":1,"next":5,"map":[[-1,1]]}', id="negative-point"),
    ],
)
def test_anything_this_version_did_not_write_is_refused(value: bytes) -> None:
    """A value outside the v1 format, or with an absurd offset, raises PositionError, never another exception."""
    with pytest.raises(PositionError):
        decode(value)


def test_key_names_relay_topic_and_partition_and_parses_back() -> None:
    """The key is ``<relay>/<topic>/<partition>``; a relay name with a slash still parses from the right."""
    assert key("mirror", SourcePartition("orders", 3)) == b"mirror/orders/3"
    assert parse_key(b"dc/a/mirror/orders/3") == ("dc/a/mirror", SourcePartition("orders", 3))
    assert parse_key(b"no-partition") is None
    assert parse_key(b"mirror/orders/x") is None


@given(maps())
def test_thin_keeps_the_newest_points_and_a_bounded_number(points: tuple[tuple[int, int], ...]) -> None:
    """Thinning keeps the newest DENSE points as they are, keeps order, and never holds more than DENSE + 64."""
    thinned = thin(points)
    assert thinned[-DENSE:] == points[-DENSE:]
    assert list(thinned) == sorted(set(thinned)) and set(thinned) <= set(points)
    assert len(thinned) <= DENSE + 121
    assert not points or thinned[0] == points[0]


def _thinned_as_relayed(steps: list[int]) -> tuple[list[int], tuple[tuple[int, int], ...]]:
    """Every point a relay makes for transactions of ``steps`` source offsets each, and its map, thinned each time."""
    made, kept, s = [], (), 0
    for step in steps:
        s += step
        made.append(s)
        kept = thin((*kept, (s, s)))
    return made, kept


def test_thin_applied_per_transaction_keeps_the_oldest_point_and_few_points() -> None:
    """Thinned after every transaction, as the target does, the map keeps its first point and about two
    points per doubling of the distance it covers."""
    made, kept = _thinned_as_relayed([1] * 60_000)
    assert kept[0] == (1, 1) and kept[-DENSE:] == tuple((s, s) for s in made[-DENSE:])
    assert len(kept) <= DENSE + 2 * (60_000).bit_length()


@given(st.lists(st.sampled_from([1, 2, 3, 50, 500]), min_size=1, max_size=400), st.data())
def test_thin_bounds_the_re_read_by_the_distance_or_one_transaction(steps: list[int], data: st.DataObject) -> None:
    """A group at any source offset re-reads at most its distance from the newest point, or the
    transaction it is in if that is longer; at a boundary of the last DENSE transactions, nothing."""
    made, kept = _thinned_as_relayed(steps)
    committed = data.draw(st.integers(made[0], made[-1]))
    point = translate(kept, committed)
    assert point is not None
    later = [s for s in made if s > committed]
    transaction = (later[0] - max([s for s in made if s <= committed])) if later else 0
    assert committed - point[0] <= max(made[-1] - committed, transaction)
    if committed in made[-DENSE:]:
        assert point[0] == committed


@given(maps(), st.integers(0, 500_000))
def test_translation_rounds_down_and_never_skips(points: tuple[tuple[int, int], ...], committed: int) -> None:
    """The translated point is the newest one at or before the committed offset; none before it is skipped."""
    found = translate(points, committed)
    before = [p for p in points if p[0] <= committed]
    assert found == (before[-1] if before else None)


def test_advancing_adds_a_point_or_repeats_the_last_target_offset() -> None:
    """An entry moves on with a map point; without a target offset it reuses the last one (still never past)."""
    entry = Entry(-1).advanced(100, 90)
    assert entry == Entry(100, ((100, 90),))
    assert entry.advanced(150, None) == Entry(150, ((100, 90), (150, 90)))
    assert Entry(-1).advanced(10, None) == Entry(10)


def test_advance_maps_mirrored_partitions_and_only_those() -> None:
    """A transaction adds a map point where a target partition mirrors the source one, and none elsewhere."""
    a, b = SourcePartition("orders", 0), SourcePartition("events", 1)
    current = {a: Entry(100, ((100, 90),))}

    def mirror(sp: SourcePartition) -> tuple[str, int] | None:
        return ("orders", 0) if sp == a else None

    after = advance(current, {a: 150, b: 7}, mirror, {("orders", 0): 139})
    assert after == {a: Entry(150, ((100, 90), (150, 140))), b: Entry(7)}
    # The mirrored partition got no record this time (all of them went elsewhere): the last target offset holds.
    assert advance(after, {a: 160}, mirror, {})[a] == Entry(160, ((100, 90), (150, 140), (160, 140)))
    # A map kept from a time the route was preserve is dropped once it is not: its target offsets mean nothing.
    assert advance(after, {a: 170}, lambda sp: None, {("orders", 0): 200})[a] == Entry(170)
