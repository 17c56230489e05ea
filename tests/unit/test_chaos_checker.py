"""The chaos checker's pure parts: what counts as lost, duplicated, reordered, a gap, an orphan, explained."""

from __future__ import annotations

from bench.chaos.checker import (
    Seen,
    Window,
    classify_orphans,
    compare,
    explain,
    parse_reported_gaps,
    windows_from,
)
from bench.chaos.model import Entry, Ledger, ValueMaker, parse_key, record_headers, record_key, sha256

VALUES = ValueMaker(7, pool_size=4096)


def _entry(seq: int, offset: int, partition: int = 0, size: int = 100) -> Entry:
    value = VALUES.make(record_key("p", seq), seq, size)
    return Entry(seq, partition, size, sha256(value), offset)


def _seen(entry: Entry, **changes: object) -> Seen:
    fields: dict[str, object] = {
        "key": record_key("p", entry.seq),
        "digest": entry.sha256,
        "size": entry.size,
        "headers": record_headers(entry.seq),
    }
    fields.update(changes)
    return Seen(**fields)  # type: ignore[arg-type]


def test_exactly_once_in_order_passes() -> None:
    want = [_entry(i, i) for i in range(5)]
    verdict = compare("p", "t", {0: want}, {0: [_seen(e) for e in want]})
    assert verdict.ok and verdict.expected == 5 and verdict.found == 5


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


def test_changed_bytes_or_headers_are_corrupted() -> None:
    want = [_entry(0, 0), _entry(1, 1)]
    have = [_seen(want[0], digest=sha256(b"other")), _seen(want[1], headers=(("content-type", b"x"),))]
    verdict = compare("p", "t", {0: want}, {0: have})
    assert verdict.corrupted == 2


def test_the_relays_position_header_is_not_a_difference() -> None:
    want = [_entry(0, 0)]
    have = [_seen(want[0], headers=(*record_headers(0), ("kfr-pos", b"v1 p 0:1")))]
    assert compare("p", "t", {0: want}, {0: have}).ok


def test_records_in_a_reported_gap_must_be_absent() -> None:
    want = [_entry(i, i) for i in range(6)]
    gaps = {0: [(2, 4)]}
    ok = compare("p", "t", {0: want}, {0: [_seen(e) for e in want if not 2 <= e.offset < 4]}, gaps)
    assert ok.ok and ok.gap_expected == 2 and ok.expected == 4
    present = compare("p", "t", {0: want}, {0: [_seen(e) for e in want]}, gaps)
    assert present.gap_present == 2 and not present.ok


def test_a_key_never_produced_there_is_foreign() -> None:
    want = [_entry(0, 0)]
    verdict = compare("p", "t", {0: want, 1: []}, {0: [_seen(want[0])], 1: [_seen(want[0])]})
    assert verdict.foreign == 1


def test_ledger_orders_by_offset_and_counts_only_delivered() -> None:
    ledger = Ledger("p", 2)
    for seq, partition in ((0, 1), (1, 1), (2, 0)):
        ledger.add(Entry(seq, partition, 10, "x"))
    ledger.delivered(1, 0)
    ledger.delivered(0, 1)
    assert [e.seq for e in ledger.by_partition()[1]] == [1, 0]
    assert ledger.undelivered() == 1 and ledger.totals() == (2, 20)


def test_keys_and_values() -> None:
    key = record_key("mirror", 42)
    assert parse_key(key) == ("mirror", 42)
    assert parse_key(b"nope") is None and parse_key(None) is None
    value = VALUES.make(key, 42, 300)
    assert len(value) == 300 and value.startswith(key)
    assert VALUES.make(key, 42, 300) == value


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
    listed = ["chaos/mirror/0/5", "chaos/mirror/0/120", "chaos/mirror/1/7", "elsewhere/x"]
    got = classify_orphans(listed, {"chaos/mirror/0/5"}, "chaos", "mirror", {0: [(100, 150)]})
    explained = [k for k in got if not k.startswith("unexplained")]
    assert got[explained[0]] == ["chaos/mirror/0/120"]
    assert sum(len(v) for k, v in got.items() if k.startswith("unexplained")) == 2


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
    ]
    got = windows_from(events)
    assert Window("broker_kill", "dr", 10.0, 20.0) in got
    assert any(w.kind == "burst" for w in got)
