"""Unit tests of what positions entries say about their writer and topics, and what a resume makes of it."""

from __future__ import annotations

import pytest

from relay.message import SourcePartition
from relay.settings import TopicConfig
from relay.target import TargetError
from targets.kafka.identity import TopicIds, check_writers, reconcile
from targets.kafka.positions import Entry, PositionError, decode, encode, map_restarted

SP = SourcePartition("orders", 0)
ROUTES = {"orders": TopicConfig(source="orders", target="orders-dr")}


def test_an_entry_names_its_writer_topic_ids_and_map_start_and_reads_back() -> None:
    """Writer, source topic id per cluster, target topic id and the map start survive the wire format."""
    entry = Entry(120, ((100, 7), (120, 27)), "dr", (("east", "S1"), ("west", "S2")), "T1", 100)
    raw = encode(entry)
    assert raw == (
        b'{"v":1,"next":120,"map":[[100,7],[120,27]],"w":"dr","src":{"east":"S1","west":"S2"},"tid":"T1","since":100}'
    )
    assert decode(raw) == entry
    assert decode(encode(Entry(5), "other")).writer == "other"


def test_an_entry_written_before_ids_were_kept_reads_with_none() -> None:
    """A value of the earlier format is read as it was, with no writer and no ids."""
    assert decode(b'{"v":1,"next":1234,"map":[[1000,980],[1234,1214]]}') == Entry(1234, ((1000, 980), (1234, 1214)))


@pytest.mark.parametrize(
    "value",
    [
        b'{"v":1,"next":1,"w":3}',
        b'{"v":1,"next":1,"src":["a"]}',
        b'{"v":1,"next":1,"tid":1}',
        b'{"v":1,"next":1,"since":-4}',
    ],
)
def test_identity_fields_of_the_wrong_type_are_refused(value: bytes) -> None:
    """A writer, id or map start of the wrong type is an entry this version did not write."""
    with pytest.raises(PositionError):
        decode(value)


def test_target_offsets_going_back_start_a_new_map_that_reads_back() -> None:
    """The target partition recreated under a running relay: the map starts again instead of refusing to grow."""
    entry = Entry(1000, ((500, 500), (1000, 1000)), "dr", (("east", "S1"),), "T1")
    moved = entry.advanced(1100, 100)
    assert moved == Entry(1100, ((1100, 100),), "dr", (("east", "S1"),), None, 1100)
    assert map_restarted(entry, moved)
    assert decode(encode(moved)) == moved
    assert not map_restarted(entry, entry.advanced(1200, 1200))


def test_a_relay_refuses_positions_written_under_its_name_by_another_transactional_id() -> None:
    """Entries of another writer stop the relay with one line naming both ids; unnamed ones are trusted."""
    check_writers({SP: Entry(5, writer="a"), SourcePartition("orders", 1): Entry(3)}, "a", "fk", "positions")
    with pytest.raises(TargetError) as err:
        check_writers({SP: Entry(5, writer="a")}, "b", "fk", "target t: positions topic 'p'")
    assert "'a'" in str(err.value) and "'b'" in str(err.value) and "positions copy --from fk" in str(err.value)


def _reconcile(entry: Entry | None, ids: TopicIds) -> tuple[Entry, bool, list[str]]:
    recreated: list[str] = []
    current, unwritten = reconcile({SP: entry} if entry else {}, [SP], ROUTES, ids, "dr", recreated.append)
    return current[SP], SP in unwritten, recreated


def test_entries_are_stamped_with_the_writer_and_the_ids_seen_now() -> None:
    """An entry without ids is trusted and takes the ids and writer it is written with next; a new partition too."""
    ids = TopicIds("east", {"orders": "S1"}, {"orders-dr": "T1"})
    entry, now, recreated = _reconcile(Entry(40, ((40, 40),)), ids)
    assert entry == Entry(40, ((40, 40),), "dr", (("east", "S1"),), "T1") and not now and not recreated
    fresh, now, _ = _reconcile(None, ids)
    assert fresh == Entry(-1, (), "dr", (("east", "S1"),), "T1") and not now


def test_a_source_topic_with_a_new_id_is_relayed_from_its_beginning() -> None:
    """A new source topic id on the cluster read: position and map start over, written at once, counted."""
    ids = TopicIds("east", {"orders": "S2"}, {"orders-dr": "T1"})
    entry, now, recreated = _reconcile(Entry(40, ((40, 40),), "dr", (("east", "S1"), ("west", "W1")), "T1"), ids)
    assert entry == Entry(-1, (), "dr", (("east", "S2"),), "T1") and now and recreated == ["orders"]


def test_another_cluster_of_a_failover_pair_is_not_a_recreated_topic() -> None:
    """The same topic on another source cluster has another id: it is added, never taken for a recreation."""
    ids = TopicIds("west", {"orders": "W1"}, {"orders-dr": "T1"})
    entry, now, recreated = _reconcile(Entry(40, (), "dr", (("east", "S1"),), "T1"), ids)
    assert entry.next == 40 and entry.source_ids == (("east", "S1"), ("west", "W1")) and not now and not recreated


def test_a_target_topic_with_a_new_id_keeps_the_position_and_starts_a_new_map() -> None:
    """A new target topic id: the position stays, the map starts over from it (since), written at once."""
    ids = TopicIds("east", {"orders": "S1"}, {"orders-dr": "T2"})
    entry, now, recreated = _reconcile(Entry(40, ((20, 20), (40, 40)), "dr", (("east", "S1"),), "T1"), ids)
    assert entry == Entry(40, (), "dr", (("east", "S1"),), "T2", 40) and now and not recreated
    assert decode(encode(entry.advanced(60, 20))) == Entry(60, ((60, 20),), "dr", (("east", "S1"),), "T2", 40)
