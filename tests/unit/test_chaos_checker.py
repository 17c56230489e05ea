"""The chaos checker's pure parts: what counts as lost, duplicated, reordered, a gap, an orphan, explained."""

from __future__ import annotations

from bench.chaos.checker import (
    Gap,
    Seen,
    Window,
    classify_orphans,
    compare,
    explain,
    parse_reported_gaps,
    windows_from,
)
from bench.chaos.model import (
    ID_HEADER,
    SHAPES,
    Entry,
    Ledger,
    ValueMaker,
    identity,
    parse_key,
    pick_shape,
    record_fields,
    record_headers,
    record_key,
    sha256,
)

VALUES = ValueMaker(7, pool_size=4096)
TIMESTAMP = 1_700_000_000_000


def _shape(key: str, value: str, headers: str) -> int:
    return next(i for i, s in enumerate(SHAPES) if (s.key, s.value, s.headers) == (key, value, headers))


def _entry(seq: int, offset: int, partition: int = 0, size: int = 100, shape: int = 0, generation: int = 0) -> Entry:
    value = VALUES.value("p", seq, shape, size)
    return Entry(seq, partition, len(value or b""), sha256(value), offset, TIMESTAMP + seq, shape, generation)


def _seen(entry: Entry, **changes: object) -> Seen:
    key, headers = record_fields("p", entry.seq, entry.shape)
    fields: dict[str, object] = {
        "key": key,
        "digest": entry.sha256,
        "size": entry.size,
        "headers": headers,
        "timestamp": entry.timestamp,
    }
    fields.update(changes)
    return Seen(**fields)  # type: ignore[arg-type]


def test_exactly_once_in_order_passes() -> None:
    want = [_entry(i, i) for i in range(5)]
    verdict = compare("p", "t", {0: want}, {0: [_seen(e) for e in want]})
    assert verdict.ok and verdict.expected == 5 and verdict.found == 5


def test_every_shape_read_back_as_produced_passes() -> None:
    want = [_entry(i, i, shape=shape) for i, shape in enumerate(range(len(SHAPES)))]
    verdict = compare("p", "t", {0: want}, {0: [_seen(e) for e in want]})
    assert verdict.ok and verdict.expected == len(SHAPES)


def test_a_missing_record_is_lost_and_a_repeated_one_duplicated() -> None:
    want = [_entry(i, i) for i in range(5)]
    have = [_seen(want[0]), _seen(want[1]), _seen(want[1]), _seen(want[3]), _seen(want[4])]
    verdict = compare("p", "t", {0: want}, {0: have})
    assert (verdict.lost, verdict.duplicated, verdict.reordered) == (1, 1, 0)
    assert not verdict.ok
    assert any("source offset 2" in p and "missing" in p for p in verdict.problems)


def test_records_out_of_source_order_are_reordered() -> None:
    want = [_entry(i, i) for i in range(3)]
    verdict = compare("p", "t", {0: want}, {0: [_seen(want[1]), _seen(want[0]), _seen(want[2])]})
    assert verdict.reordered == 1 and not verdict.ok


def test_a_recreated_source_topics_records_follow_the_old_ones() -> None:
    old = [_entry(i, i) for i in range(3)]
    new = [_entry(3 + i, i, generation=1) for i in range(3)]
    in_order = compare("p", "t", {0: old + new}, {0: [_seen(e) for e in old + new]})
    assert in_order.ok and in_order.expected == 6
    new_first = compare("p", "t", {0: old + new}, {0: [_seen(e) for e in new + old]})
    assert new_first.reordered == 3


def test_changed_bytes_or_headers_are_corrupted() -> None:
    want = [_entry(0, 0), _entry(1, 1)]
    have = [_seen(want[0], digest=sha256(b"other")), _seen(want[1], headers=(*record_headers("p", 1), ("x", b"")))]
    verdict = compare("p", "t", {0: want}, {0: have})
    assert verdict.corrupted == 2


def test_a_null_value_is_not_an_empty_one() -> None:
    tombstone = _entry(0, 0, shape=_shape("id", "null", "standard"))
    empty = _entry(1, 1, shape=_shape("id", "empty", "standard"))
    assert tombstone.sha256 is None and empty.sha256 == sha256(b"")
    have = [_seen(tombstone, digest=sha256(b""), size=0), _seen(empty, digest=None, size=0)]
    verdict = compare("p", "t", {0: [tombstone, empty]}, {0: have})
    assert verdict.corrupted == 2
    assert "value not null, produced null" in verdict.problems[0]


def test_a_null_key_is_not_an_empty_one() -> None:
    null_key = _entry(0, 0, shape=_shape("null", "data", "standard"))
    empty_key = _entry(1, 1, shape=_shape("empty", "data", "standard"))
    verdict = compare("p", "t", {0: [null_key, empty_key]}, {0: [_seen(null_key, key=b""), _seen(empty_key, key=None)]})
    assert verdict.corrupted == 2
    assert "key b'', produced null" in verdict.problems[0]


def test_headers_must_keep_their_order_duplicates_and_null_values() -> None:
    dup = _entry(0, 0, shape=_shape("id", "data", "duplicate"))
    nul = _entry(1, 1, shape=_shape("id", "data", "null"))
    dup_headers, nul_headers = record_fields("p", 0, dup.shape)[1], record_fields("p", 1, nul.shape)[1]
    assert [n for n, _ in dup_headers].count("tag") == 3 and ("nothing", None) in nul_headers
    deduplicated = tuple(dict.fromkeys(dup_headers))
    reordered = (dup_headers[1], dup_headers[0], *dup_headers[2:])
    emptied = tuple((n, v if v is not None else b"") for n, v in nul_headers)
    for wrong in (deduplicated, reordered):
        assert compare("p", "t", {0: [dup]}, {0: [_seen(dup, headers=wrong)]}).corrupted == 1
    assert compare("p", "t", {0: [nul]}, {0: [_seen(nul, headers=emptied)]}).corrupted == 1


def test_hydrations_added_content_type_is_a_difference() -> None:
    untyped = _entry(0, 0, shape=_shape("id", "data", "untyped"))
    headers = (*record_fields("p", 0, untyped.shape)[1], ("content-type", b"application/octet-stream"))
    verdict = compare("p", "t", {0: [untyped]}, {0: [_seen(untyped, headers=headers)]})
    assert verdict.corrupted == 1 and "untyped headers" in verdict.problems[0]


def test_a_changed_timestamp_is_corrupted() -> None:
    want = [_entry(0, 0)]
    verdict = compare("p", "t", {0: want}, {0: [_seen(want[0], timestamp=want[0].timestamp + 1)]})
    assert verdict.corrupted == 1 and "timestamp" in verdict.problems[0]


def test_a_record_in_another_partition_is_corrupted_not_lost() -> None:
    want = {0: [_entry(0, 0, partition=0)], 1: [_entry(1, 0, partition=1)]}
    verdict = compare("p", "t", want, {0: [], 1: [_seen(want[0][0]), _seen(want[1][0])]})
    assert (verdict.corrupted, verdict.lost) == (1, 0)
    assert "in partition 1, produced into 0" in verdict.problems[0]


def test_the_relays_position_header_is_a_difference() -> None:
    want = [_entry(0, 0)]
    have = [_seen(want[0], headers=(*record_headers("p", 0), ("kfr-pos", b"v1 p 0:1")))]
    assert compare("p", "t", {0: want}, {0: have}).corrupted == 1


def test_records_in_a_reported_gap_must_be_absent() -> None:
    want = [_entry(i, i) for i in range(6)]
    gaps = [Gap(0, 2, 4)]
    ok = compare("p", "t", {0: want}, {0: [_seen(e) for e in want if not 2 <= e.offset < 4]}, gaps)
    assert ok.ok and ok.gap_expected == 2 and ok.expected == 4
    present = compare("p", "t", {0: want}, {0: [_seen(e) for e in want]}, gaps)
    assert present.gap_present == 2 and not present.ok


def test_a_gap_belongs_to_one_generation_of_the_topic() -> None:
    old = [_entry(i, i) for i in range(3)]
    new = [_entry(3 + i, i, generation=1) for i in range(3)]
    verdict = compare("p", "t", {0: old + new}, {0: [_seen(e) for e in old + new if e.seq != 1]}, [Gap(0, 1, 2)])
    assert verdict.ok and verdict.gap_expected == 1 and verdict.expected == 5


def test_records_of_a_deleted_target_topic_are_not_expected_and_must_not_come_back() -> None:
    want = [_entry(i, i) for i in range(5)]
    after = compare("p", "t", {0: want}, {0: [_seen(e) for e in want[2:]]}, removed={0, 1})
    assert after.ok and after.removed == 2 and after.expected == 3
    again = compare("p", "t", {0: want}, {0: [_seen(e) for e in want]}, removed={0, 1})
    assert again.duplicated == 2 and not again.ok
    assert "relayed again" in again.problems[0]


def test_a_record_without_its_identity_is_foreign() -> None:
    want = [_entry(0, 0)]
    verdict = compare("p", "t", {0: want, 1: []}, {0: [_seen(want[0])], 1: [_seen(want[0], headers=())]})
    assert verdict.foreign == 1


def test_every_shape_keeps_its_identity_and_large_records_keep_a_value() -> None:
    for shape in range(len(SHAPES)):
        assert identity(record_fields("mirror", 9, shape)[1]) == ("mirror", 9)
    rng = __import__("random").Random(3)
    large = {pick_shape(rng, True, untyped_large=False) for _ in range(2000)}
    assert all(SHAPES[i].value == "data" and SHAPES[i].typed for i in large) and len(large) > 1
    assert any(not SHAPES[pick_shape(rng, True, untyped_large=True)].typed for _ in range(2000))
    assert ID_HEADER in dict(record_headers("p", 1, "bare"))


def test_ledger_orders_by_generation_and_offset_and_counts_only_delivered() -> None:
    ledger = Ledger("p", 2)
    for seq, partition, generation in ((0, 1, 1), (1, 1, 0), (2, 0, 0), (3, 1, 0)):
        ledger.add(Entry(seq, partition, 10, "x", generation=generation))
    ledger.delivered(1, 5)
    ledger.delivered(0, 0)
    ledger.delivered(3, 4)
    assert [e.seq for e in ledger.by_partition()[1]] == [3, 1, 0]
    assert ledger.undelivered() == 1 and ledger.totals() == (3, 30)


def test_keys_and_values() -> None:
    key = record_key("mirror", 42)
    assert parse_key(key) == ("mirror", 42)
    assert parse_key(b"nope") is None and parse_key(None) is None
    value = VALUES.make(key, 42, 300)
    assert len(value) == 300 and value.startswith(key)
    assert VALUES.make(key, 42, 300) == value
    assert VALUES.value("mirror", 42, 0, 300) == value
    assert VALUES.value("mirror", 42, _shape("id", "null", "standard"), 300) is None


def test_reported_gaps_from_the_fail_line_and_the_skip_event() -> None:
    fail = (
        "kafka-lfs-relay: source east: topic mirror partition 2: offsets [100, 150) were deleted (retention) "
        "before they were relayed; on_gap is fail, so the relay stops"
    )
    skip = {
        "event": "records deleted before they were relayed are skipped (on_gap: skip)",
        "partition": 2,
        "missing": "[100, 150)",
    }
    got = parse_reported_gaps([skip, {"event": "relay stopped", "error": fail[17:]}], [fail, "other"])
    assert got == {"fail": {(2, 100, 150)}, "skip": {(2, 100, 150)}}


def test_orphans_in_a_gap_are_explained_and_others_are_not() -> None:
    sha = "ab" * 32
    gapped = [Entry(1, 0, 10, sha, 120)]
    listed = [
        f"chaos/chaos-mirror/mirror/0/5-{sha}",
        f"chaos/chaos-mirror/mirror/0/120-{sha}",
        f"chaos/chaos-mirror/mirror/1/7-{sha}",
        f"chaos/chaos-mirror-renamed/mirror/0/9-{sha}",
        "elsewhere/x",
    ]
    got = classify_orphans(listed, {listed[0]}, "chaos", "chaos-mirror", "mirror", gapped)
    explained = [k for k in got if not k.startswith("unexplained")]
    assert got[explained[0]] == [listed[1]]
    assert sum(len(v) for k, v in got.items() if k.startswith("unexplained")) == 3
    assert any("renamed" in k for k in got)


def test_errors_are_explained_only_by_a_matching_fault_nearby() -> None:
    windows = [
        Window("s3_kill", "s3", 100.0, 120.0),
        Window("broker_kill", "dr", 300.0, 310.0),
        Window("gap", "gap", 500.0, 505.0),
    ]
    clusters = {"mirror": ("east", "west", "dr"), "group": ("east", "plain")}
    assert explain("S3 upload failed", "mirror", "mirror", 130.0, windows, clusters)
    assert explain("S3 upload failed", "mirror", "mirror", 1000.0, windows, clusters) is None
    assert explain("target dr: transaction timed out", "mirror", "mirror", 320.0, windows, clusters)
    assert explain("target plain: transaction timed out", "group-a", "group", 320.0, windows, clusters) is None
    assert explain("offsets [1, 2) were deleted (retention)", "mirror", "mirror", 501.0, windows, clusters)
    assert explain("offsets [1, 2) were deleted (retention)", "mirror", "mirror", 50.0, windows, clusters) is None
    assert explain("internal error: KeyError", "mirror", "mirror", 110.0, windows, clusters) is None
    # A line naming a cluster is explained only by that cluster's outage.
    assert explain('{"source": "east", "event": "down"}', "mirror", "mirror", 305.0, windows, clusters) is None
    assert explain('{"source": "dr", "event": "down"}', "mirror", "mirror", 305.0, windows, clusters)


def test_fencing_needs_a_zombie_or_a_kill_nearby() -> None:
    clusters = {"group": ("east", "plain")}
    pause = [Window("relay_pause", "group-b", 100.0, 110.0)]
    assert explain("fenced by the partition's new owner", "group-b", "group", 112.0, pause, clusters)
    assert explain("fenced by the partition's new owner", "group-b", "group", 900.0, pause, clusters) is None


def test_windows_pair_begin_and_end() -> None:
    events = [
        {"kind": "broker_kill", "phase": "begin", "cluster": "dr", "wall": 10.0},
        {"kind": "burst", "phase": "begin", "topic": "orders", "wall": 11.0},
        {"kind": "broker_kill", "phase": "end", "cluster": "dr", "wall": 20.0},
        {"kind": "rolling_restart", "phase": "begin", "relays": ["group-a", "group-b"], "wall": 30.0},
        {"kind": "rolling_restart", "phase": "end", "relays": ["group-a", "group-b"], "wall": 40.0},
    ]
    got = windows_from(events)
    assert Window("broker_kill", "dr", 10.0, 20.0) in got
    assert any(w.kind == "burst" for w in got)
    assert Window("rolling_restart", "group-b", 30.0, 40.0) in got


def test_fencing_is_explained_by_an_overlapping_instance_of_that_relay_only() -> None:
    clusters = {"mirror": ("east", "west", "dr"), "hydrate": ("dr", "plain")}
    overlap = [Window("overlap_deploy", "mirror", 100.0, 130.0)]
    line = "target dr: fenced 4 times in 300s; another relay is writing with transactional.id 'chaos-mirror'"
    assert explain(line, "mirror", "mirror", 125.0, overlap, clusters)
    assert explain(line, "hydrate", "hydrate", 125.0, overlap, clusters) is None


def test_a_source_recreated_explains_a_source_down_and_a_member_that_stops_for_it() -> None:
    """Lines about the source of a relay whose source topic was recreated are explained near that operation only."""
    windows = [Window("source_recreated", "group-a", 100.0, 110.0)]
    clusters = {"group": ("east", "plain")}
    line = "source east: topic orders was deleted and created again (topic id a -> b); this member stops"
    assert explain(line, "group-a", "group", 120.0, windows, clusters)
    assert explain("active source is down and no other is healthy; waiting", "group-a", "group", 105.0,
                           windows, clusters)  # fmt: skip
    assert explain(line, "group-b", "group", 120.0, windows, clusters) is None
    assert explain(line, "group-a", "group", 1000.0, windows, clusters) is None


def test_orphans_of_envelopes_deleted_with_their_target_topic_are_explained() -> None:
    """An object whose envelope went with a recreated target topic is explained; one of a record kept is not."""
    sha = "cd" * 32
    removed = [Entry(4, 2, 10, sha, 30)]
    listed = [f"chaos/chaos-mirror/mirror/2/30-{sha}", f"chaos/chaos-mirror/mirror/2/31-{sha}"]
    got = classify_orphans(listed, set(), "chaos", "chaos-mirror", "mirror", [], removed)
    assert got == {
        "its envelope was deleted with its target topic (target recreated)": [listed[0]],
        "unexplained: the record was relayed again but its envelope points elsewhere, or never": [listed[1]],
    }


def test_the_hydrator_s_source_down_while_its_source_topic_is_recreated_is_explained() -> None:
    """dr/mirror recreated: the hydrator's "source down" line is explained nearby, the mirror's is not."""
    windows = [Window("target_recreated", "hydrate", 100.0, 108.0), Window("target_recreated", "mirror", 100.0, 108.0)]
    clusters = {"hydrate": ("dr", "plain"), "mirror": ("east", "west", "dr")}
    line = "active source is down and no other is healthy; waiting"
    assert explain(line, "hydrate", "hydrate", 106.0, windows, clusters)
    assert explain(line, "mirror", "mirror", 106.0, windows, clusters) is None
