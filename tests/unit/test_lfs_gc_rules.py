"""Unit tests of lfs gc's rules: keys read back into source coordinates, and which objects may go."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_lfs_relay.lfsgc.census import Census, Knowledge, classify
from kafka_lfs_relay.lfsgc.command import human
from kafka_lfs_relay.lfsgc.keys import KeyParts, KeyPattern
from kafka_lfs_relay.lfsgc.metrics import registry
from relay.message import SourcePartition
from targets.lfs.config import DEFAULT_KEY_TEMPLATE, KeyTemplate

SHA = "ab" * 32


def test_default_keys_parse_back_into_their_source_record() -> None:
    """prefix/relay/topic/partition/offset-sha256: every part back; the listing prefix is prefix/relay/."""
    template = KeyTemplate(DEFAULT_KEY_TEMPLATE)
    pattern = KeyPattern(template, "lfs", "orders mirror")
    key = template.render("lfs", "orders.v2", "orders-dr", 3, 1234, "orders mirror", SHA)
    assert pattern.list_prefix == "lfs/orders%20mirror/"
    assert pattern.parse(key) == KeyParts("orders.v2", None, 3, 1234, SHA)


@pytest.mark.parametrize(
    "key",
    [
        f"lfs/other-relay/orders/3/1234-{SHA}",  # another relay sharing the bucket
        f"lfs/orders%20mirror/orders/3/1234-{SHA[:-1]}",  # not a sha256
        f"lfs/orders%20mirror/orders/3/1234-{SHA}.tmp",
        f"lfs/orders%20mirror/.kfr-conditional-write-probe-{SHA}",  # the uploader's probe
        f"lfs/orders%20mirror/orders/x/1234-{SHA}",
    ],
)
def test_keys_this_relay_does_not_write_do_not_parse(key: str) -> None:
    """Anything but a key the template renders for this relay is someone else's."""
    assert KeyPattern(KeyTemplate(DEFAULT_KEY_TEMPLATE), "lfs", "orders mirror").parse(key) is None


def test_custom_templates_padding_and_an_empty_prefix() -> None:
    """A template naming the target topic with padded offsets, under no prefix, parses as it renders."""
    template = KeyTemplate("{prefix}/{target_topic}/{relay}/p{partition}/{offset:012d}/{sha256}")
    pattern = KeyPattern(template, "", "dr")
    key = template.render("", "orders", "orders-dr", 0, 42, "dr", SHA)
    assert key == f"orders-dr/dr/p0/000000000042/{SHA}"
    assert pattern.list_prefix == ""
    assert pattern.parse(key) == KeyParts(None, "orders-dr", 0, 42, SHA)


def known(**changes: object) -> Knowledge:
    base: dict[str, object] = {
        "live": frozenset({"live-key"}),
        "positions": {SourcePartition("orders", 0): 100},
        "oldest": {SourcePartition("orders", 0): 50},
        "source_of": {"orders-dr": "orders"},
        "sources": frozenset({"orders"}),
    }
    base.update(changes)
    return Knowledge(**base)  # type: ignore[arg-type]


def parts(offset: int, topic: str | None = "orders", partition: int = 0) -> KeyParts:
    return KeyParts(topic, None if topic else "orders-dr", partition, offset, SHA)


@pytest.mark.parametrize(
    ("key_parts", "key", "age", "state"),
    [
        (None, "someone/else", 10**6, "foreign"),
        (parts(10), "live-key", 10**6, "live"),
        (parts(10), "k", 3599, "young"),
        (parts(10, topic="payments"), "k", 10**6, "unmanaged"),
        (parts(100), "k", 10**6, "in_flight"),
        (parts(10, partition=1), "k", 10**6, "in_flight"),  # no position for that partition yet
        (parts(49), "k", 10**6, "expired"),
        (parts(50), "k", 10**6, "orphan"),
        (parts(99, topic=None), "k", 10**6, "orphan"),  # a key naming the target topic
    ],
)
def test_each_rule_in_order(key_parts: KeyParts | None, key: str, age: float, state: str) -> None:
    """Foreign, live, young, unmanaged, in flight, then expired or orphan: the first rule that holds decides."""
    assert classify(key_parts, key, age, 3600, known()) == state


def test_a_live_object_is_never_deletable_however_old_or_far_behind() -> None:
    """Named by an envelope: live, whatever its age and offset."""
    assert classify(parts(0), "live-key", 10**9, 1, known(positions={SourcePartition("orders", 0): 10**9})) == "live"


def test_census_counts_and_keeps_only_deletable_keys() -> None:
    """Counts and bytes per state; orphan and expired keys are the ones to delete."""
    census = Census()
    for key, size, state in [("a", 10, "live"), ("b", 20, "orphan"), ("c", 30, "expired"), ("d", 5, "young")]:
        census.add(key, size, state)
    assert census.objects["live"] == 1 and census.bytes["expired"] == 30
    assert [k for k, _, _ in census.deletable] == ["b", "c"] and census.deletable_bytes == 50


def test_run_metrics_render_for_the_textfile_collector(tmp_path: Path) -> None:
    """The run's gauges: per state, deleted, errors, success."""
    census = Census()
    census.add("b", 20, "orphan")
    text = registry(census, (1, 20), 0, 1.5, True)
    from prometheus_client import generate_latest

    body = generate_latest(text).decode()
    assert 'kafka_lfs_relay_lfs_gc_objects{state="orphan"} 1.0' in body
    assert "kafka_lfs_relay_lfs_gc_deleted_bytes 20.0" in body and "kafka_lfs_relay_lfs_gc_success 1.0" in body


def test_sizes_read_for_people() -> None:
    """Bytes rendered in the largest unit below 1024."""
    assert (human(0), human(1536), human(5 * 2**30)) == ("0 B", "1.5 KiB", "5.0 GiB")
