"""Unit tests of consumer-group offset translation (targets.kafka.groups)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kafka_lfs_relay.offsets import sync_moves
from relay.message import SourcePartition
from targets.kafka.groups import Translation, translate_offset
from targets.kafka.positions import Entry, thin

SP = SourcePartition("orders", 0)


def relayed(batches: list[list[int]], start: int = 0) -> tuple[Entry, dict[int, int]]:
    """An entry as the Kafka target builds it for ``batches`` (source offsets per transaction, growing),
    and where each source offset landed on the target (each transaction ends with a commit marker)."""
    entry, where, t = Entry(-1), {}, start
    for batch in batches:
        for s in batch:
            where[s] = t
            t += 1
        entry = entry.advanced(batch[-1] + 1, t)
        t += 1  # the commit marker
    return entry, where


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[list[int]], int]:
    """Transactions of source offsets with gaps (filtered records, compaction), and a committed offset."""
    batches, s = [], draw(st.integers(0, 50))
    for _ in range(draw(st.integers(0, 40))):
        batch = []
        for _ in range(draw(st.integers(1, 20))):
            s += draw(st.integers(1, 3))
            batch.append(s)
        batches.append(batch)
    return batches, draw(st.integers(0, s + 30))


@given(histories())
def test_a_translated_group_never_skips_a_relayed_record_and_re_reads_at_most_what_it_says(
    history: tuple[list[list[int]], int],
) -> None:
    """From the translated offset a consumer reads every relayed record at or after its source position,
    and the records before that position it reads again are no more than the reported re-read."""
    batches, committed = history
    entry, where = relayed(batches, start=7)
    end = 7 + sum(len(b) + 1 for b in batches)
    tr = translate_offset(SP, "orders", entry, committed, start=7, end=end)
    assert 7 <= tr.target <= end
    assert all(t >= tr.target for s, t in where.items() if s >= committed), "a record would be skipped"
    reread = sum(1 for s, t in where.items() if s < committed and t >= tr.target)
    assert reread <= tr.reread


def test_a_group_on_a_batch_boundary_translates_exactly() -> None:
    """Committed exactly where a transaction ended: the target offset after it, nothing re-read."""
    entry, _ = relayed([[0, 1, 2], [3, 4, 5, 6], [7, 8]])
    tr = translate_offset(SP, "orders", entry, 7, start=0, end=11)
    assert (tr.target, tr.reread, tr.exact, tr.note) == (8, 0, True, "")


def test_a_group_mid_batch_rounds_down_to_the_boundary_before() -> None:
    """Committed inside a transaction: the boundary before it; it re-reads the records in between."""
    entry, _ = relayed([[0, 1, 2], [3, 4, 5, 6], [7, 8]])
    tr = translate_offset(SP, "orders", entry, 5, start=0, end=11)
    assert (tr.target, tr.reread, tr.exact) == (3, 2, False)  # offset 3 is the first transaction's commit marker
    assert "rounded down to the batch boundary at 3" in tr.note


def test_no_point_below_the_group_means_the_log_start() -> None:
    """Before the first mapped point, or with no map at all, a group starts at the target's log start."""
    entry, _ = relayed([[10, 11, 12]], start=5)
    tr = translate_offset(SP, "orders", entry, 11, start=5, end=9)
    assert (tr.target, tr.point) == (5, None) and "log start" in tr.note
    assert tr.reread == 3  # every record before the first point
    empty = translate_offset(SP, "orders", None, 0, start=0, end=40)
    assert (empty.target, empty.reread) == (0, 0)  # a group that read nothing re-reads nothing


def test_a_translation_stays_within_the_target_log() -> None:
    """Below the log start (deleted records) it is raised to it; past the end (topic recreated) it is refused."""
    entry, _ = relayed([[0, 1, 2], [3, 4]])
    raised = translate_offset(SP, "orders", entry, 3, start=6, end=7)
    assert raised.target == 6 and "log start" in raised.note
    recreated = translate_offset(SP, "orders", entry, 5, start=0, end=2)
    assert recreated.target == 0 and "recreated" in recreated.note


def test_a_group_ahead_of_the_relay_rounds_down_to_where_the_relay_is() -> None:
    """A group past the relay's position starts after the last relayed record; the rest is re-read later."""
    entry, _ = relayed([[0, 1, 2]])
    tr = translate_offset(SP, "orders", entry, 10, start=0, end=4)
    assert (tr.target, tr.reread) == (3, 7) and "reached only 3" in tr.note


def test_thinned_map_bounds_the_re_read_by_the_group_s_distance_from_the_newest_point() -> None:
    """Behind the dense window, a group d records behind the newest point re-reads fewer than d records."""
    entry = Entry(-1)
    for s in range(10, 100_001, 10):
        entry = Entry(s, thin((*entry.map, (s, s))))
    newest = entry.map[-1][0]
    for committed in range(10, 100_000, 997):
        tr = translate_offset(SP, "orders", entry, committed, start=0, end=100_001)
        assert tr.point is not None and tr.reread <= max(10, newest - committed), (committed, tr)
    assert len(entry.map) <= 16 + 2 * 17


def test_the_background_sync_follows_its_own_commits_both_ways_and_a_consumer_s_only_forward() -> None:
    """A partition the sync committed moves back with a rewound source group; one a consumer committed does not."""

    def at(partition: int, target: int) -> Translation:
        return Translation(SourcePartition("t", partition), "t", target, target, 0, (target, target))

    ours = "kafka-lfs-relay dr: translated from the source's committed offset"
    current = {("t", 0): (900, ours), ("t", 1): (900, ""), ("t", 2): (100, ""), ("t", 3): (500, ours)}
    translations = [at(0, 300), at(1, 300), at(2, 400), at(3, 500), at(4, 50)]
    assert sync_moves(translations, current, ours) == {("t", 0): 300, ("t", 2): 400, ("t", 4): 50}
