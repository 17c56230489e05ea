"""Unit tests of verify's pure parts: aligning two record streams, cutting the offset map into segments, --from-time."""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from filters import build_filters
from kafka_lfs_relay.config.model import FilterConfig
from kafka_lfs_relay.verify.align import Fingerprint, Tally, align, first_difference
from kafka_lfs_relay.verify.command import parse_from_time
from kafka_lfs_relay.verify.plan import Segment, segments
from kafka_lfs_relay.verify.values import Values
from lfs import Envelope, checksum
from relay.errors import ConfigError
from targets.kafka.positions import Entry


def fp(offset: int, name: str, value: str | None = None, timestamp: int = 0) -> Fingerprint:
    """A record called ``name`` (its key) at ``offset``; ``value`` defaults to the name."""
    return Fingerprint(offset, name.encode(), value if value is not None else name, b"h", timestamp)


def stream(names: str, start: int = 0) -> list[Fingerprint]:
    """One record per letter, at consecutive offsets from ``start``."""
    return [fp(start + i, c) for i, c in enumerate(names)]


def test_identical_streams_compare_every_record_and_nothing_else() -> None:
    """Same records in the same order: all compared, nothing missing, extra or different."""
    tally = align(stream("abcdef"), stream("abcdef", 100))
    assert (tally.compared, tally.missing, tally.extra, tally.different) == (6, 0, 0, 0) and tally.clean


def test_a_record_left_out_is_missing_at_its_source_offset() -> None:
    """The target lacks c: one missing, at c's source offset; the rest compared."""
    tally = align(stream("abcdef"), [*stream("ab", 100), *stream("def", 103)])
    assert (tally.compared, tally.missing, tally.first_missing, tally.extra, tally.different) == (5, 1, 2, 0, 0)


def test_a_duplicate_from_another_producer_is_extra_at_its_target_offset() -> None:
    """b written twice on the target: one extra, at the duplicate's target offset."""
    tally = align(stream("abcd"), [fp(10, "a"), fp(11, "b"), fp(12, "b"), fp(13, "c"), fp(14, "d")])
    assert (tally.compared, tally.extra, tally.first_extra, tally.missing, tally.different) == (4, 1, 12, 0, 0)


def test_a_changed_record_is_one_difference_naming_its_field() -> None:
    """c with another value: one difference at (2, 12) naming the value, nothing missing or extra."""
    target = [fp(10, "a"), fp(11, "b"), fp(12, "c", "altered"), fp(13, "d")]
    tally = align(stream("abcd"), target)
    assert (tally.compared, tally.different, tally.missing, tally.extra) == (4, 1, 0, 0)
    assert tally.first_different == (2, 12, "value")


def test_a_changed_timestamp_and_a_noted_object_are_named() -> None:
    """A timestamp differs, and a value whose object is broken carries its note."""
    broken = Fingerprint(11, b"b", ("broken",), b"h", 0, note="object s3://b/k: checksum_mismatch")
    tally = align([fp(0, "a"), fp(1, "b")], [fp(10, "a", timestamp=5), broken])
    assert tally.different == 2 and tally.first_different == (0, 10, "timestamp")
    one = align([fp(1, "b")], [broken])
    assert one.first_different == (1, 11, "value (object s3://b/k: checksum_mismatch)")


def test_raw_values_say_where_they_first_differ_without_showing_them() -> None:
    """Outside digest mode the first differing byte is named, never the bytes."""
    assert first_difference(b"abcdef", b"abXdef") == "6 vs 6 bytes, first differing at byte 2"
    assert first_difference(b"abc", b"abcd") == "3 vs 4 bytes, first differing at byte 3"
    assert first_difference(None, b"") == "null on one side"


def test_the_target_running_short_or_long_is_missing_or_extra() -> None:
    """Records after the other side ended are missing (source) or extra (target)."""
    assert align(stream("abcd"), stream("ab", 10)).missing == 2
    long = align(stream("ab"), stream("abcd", 10))
    assert (long.extra, long.first_extra) == (2, 12)


def test_reordered_records_are_decided_by_the_nearer_one() -> None:
    """b and c swapped: one missing and one extra, never a run of differences."""
    tally = align(stream("abcd"), [fp(10, "a"), fp(11, "c"), fp(12, "b"), fp(13, "d")])
    assert tally.compared == 3 and tally.missing + tally.extra == 2 and tally.different == 0


def test_the_head_segment_counts_older_target_records_apart() -> None:
    """In the first segment, target records before the first relayed one are older than the mirror."""
    tally = align(stream("abc"), [fp(0, "x"), fp(1, "y"), *stream("abc", 2)], head=True)
    assert (tally.before, tally.extra, tally.compared) == (2, 0, 3) and tally.clean
    assert align(stream("abc"), [fp(0, "x"), *stream("abc", 1)]).extra == 1, "outside the head they are extra"


def test_a_small_window_still_pairs_a_long_clean_stream() -> None:
    """The window bounds memory, not the stream: 10,000 records through a window of 8."""
    names = [fp(i, f"r{i}") for i in range(10_000)]
    tally = align(names, [fp(i + 5, f"r{i}") for i in range(10_000)], window=8)
    assert tally.compared == 10_000 and tally.clean


def test_tallies_add_up_and_keep_the_first_offsets() -> None:
    """Segments fold into one tally; the earliest first offsets stay."""
    a, b = Tally(compared=3, missing=1, first_missing=7), Tally(compared=2, missing=1, first_missing=50, extra=1,
                                                               first_extra=60)  # fmt: skip
    a.add(b)
    assert (a.compared, a.missing, a.first_missing, a.extra, a.first_extra) == (5, 2, 7, 1, 60)


def test_segments_follow_the_offset_map_from_the_log_starts() -> None:
    """From both log starts (a head segment), then one segment per pair of map points."""
    entry = Entry(300, ((100, 102), (200, 205), (300, 310)))
    assert segments(entry, 0, 0) == [
        Segment(0, 100, 0, 102, head=True), Segment(100, 200, 102, 205), Segment(200, 300, 205, 310),
    ]  # fmt: skip


def test_segments_from_a_time_round_down_to_a_map_point() -> None:
    """--from-time's offset 250 starts at the point (200, 205): exact, no head segment."""
    entry = Entry(300, ((100, 102), (200, 205), (300, 310)))
    assert segments(entry, 0, 0, from_offset=250) == [Segment(200, 300, 205, 310)]
    assert segments(entry, 0, 0, from_offset=50)[0].head, "no point below: from the log starts"


def test_segments_skip_points_below_either_log_start() -> None:
    """A point below the target's log start cannot begin a segment: those records are missing on the target."""
    entry = Entry(300, ((100, 102), (200, 205), (300, 310)))
    assert segments(entry, 150, 150) == [Segment(150, 200, 150, 205, head=True), Segment(200, 300, 205, 310)]
    assert segments(entry, 0, 400) == [], "the target lost everything relayed"
    assert segments(Entry(-1), 0, 0) == [], "nothing relayed"


def test_from_time_takes_iso_times_and_durations_ago() -> None:
    """ISO 8601 (UTC when no zone) or a duration before now; anything else names --from-time."""
    assert parse_from_time("2026-12-01T00:00:00Z") == 1_796_083_200_000
    assert parse_from_time("2026-12-01T00:00:00") == 1_796_083_200_000
    assert parse_from_time("1h", now=10_000.0) == 6_400_000
    with pytest.raises(ConfigError, match="--from-time"):
        parse_from_time("yesterday")


def record(value: bytes | None, headers: list[tuple[str, bytes | None]] | None = None, offset: int = 0) -> Message:
    return Message(topic="orders", partition=0, offset=offset, key=b"k", value=value, headers=headers,
                   timestamp=(1, 1_700_000_000_000))  # fmt: skip


def test_kafka_records_are_the_same_only_byte_for_byte() -> None:
    """Equal records give equal fingerprints; a null value is not an empty one; header order counts."""
    values = Values("kafka")
    same = values.source(record(b"v", [("a", b"1"), ("b", None)]), "east", "orders")
    assert same is not None and same.whole == values.target(record(b"v", [("a", b"1"), ("b", None)], 9)).whole
    assert values.target(record(None)).whole != values.target(record(b"")).whole
    assert values.target(record(b"v", [("b", None), ("a", b"1")])).whole != same.whole


def test_a_hydrated_record_is_expected_with_the_payload_and_the_headers_hydration_gives() -> None:
    """The envelope stands for its sha256; kfr-pos goes, original_headers and content-type come."""
    payload = b"payload"
    env = Envelope(bucket="b", key="k", size=len(payload), sha256=checksum(payload),
                   original_headers={"trace": "t1"}, content_type="text/plain")  # fmt: skip
    values = Values("hydrate")
    expected = values.source(record(env.encode(), [("n", b"1"), ("kfr-pos", b"x")]), "east", "plain")
    hydrated = values.target(record(payload, [("n", b"1"), ("trace", b"t1"), ("content-type", b"text/plain")]))
    assert expected is not None and expected.whole == hydrated.whole


def test_an_lfs_envelope_passed_through_stands_for_its_claim_and_filtered_records_are_not_expected() -> None:
    """An envelope naming another bucket is not fetched; a record a filter drops is not expected at all."""
    payload = b"x" * 100
    env = Envelope(bucket="elsewhere", key="k", size=len(payload), sha256=checksum(payload))
    values = Values("lfs", bucket="ours", filters=build_filters([FilterConfig("no-drop", "key", {"matches": "^k$"})]))
    source = values.source(record(payload), "east", "orders")
    assert source is not None and source.whole == values.target(record(env.encode())).whole
    dropping = Values("kafka", filters=build_filters([FilterConfig("drop", "key", {"matches": "^other$"})]))
    assert dropping.source(record(b"v"), "east", "orders") is None
