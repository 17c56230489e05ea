"""Source reads never jump: a standby that trails the relay's position, and records deleted by retention.

Every test checks the target record by record: exactly once, in order.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.config.model import DEFAULT_NAME
from kafka_lfs_relay.sandbox import KafkaCluster
from targets.kafka.positions import Entry, decode, default_topic, encode
from tests.conftest import ClusterFactory, TopicFactory, create_topic
from tests.integration.harness import (
    ByPartition,
    RelayProcess,
    assert_same,
    numbered,
    produce,
    read_all,
    records_by_partition,
    relay_config,
    wait_for,
    write_config,
)
from tests.integration.lfs_harness import free_port, scrape
from tests.readback import read_to_end

pytestmark = pytest.mark.integration

TOPIC = "events"
Records = list[tuple[int, bytes, bytes]]


def _lines(relay: RelayProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in relay.log_text().splitlines() if line.startswith("{")]


def _events(relay: RelayProcess, name: str) -> list[dict[str, object]]:
    return [line for line in _lines(relay) if line.get("event") == name]


def _switches(relay: RelayProcess) -> list[tuple[object, object, object]]:
    return [(s["from_source"], s["to_source"], s["reason"]) for s in _events(relay, "switching source")]


def _waits(relay: RelayProcess) -> list[dict[str, object]]:
    """The relay's "waiting for the source to reach the relay's position" lines."""
    prefix = "waiting for the source to reach the relay's position"
    return [line for line in _lines(relay) if str(line.get("event", "")).startswith(prefix)]


def _count(cluster: KafkaCluster, topic: str, partitions: int) -> ByPartition:
    return read_all(cluster, topic, partitions)


def _series(port: int, name: str, **labels: str) -> float | None:
    """The value of the one series of ``name`` whose labels include ``labels`` (None if absent)."""
    for key, value in scrape(port).items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return value
    return None


def _trailing_pair(cluster_factory: ClusterFactory) -> tuple[KafkaCluster, KafkaCluster, KafkaCluster, Records]:
    """east, west and a target; the topic has 2 partitions, and west lacks the last 1,000 records of
    partition 0 that east holds. Returns the clusters and every record east holds, in order."""
    east, west, target = cluster_factory("east"), cluster_factory("west"), cluster_factory("target")
    for cluster in (east, west):
        create_topic(cluster, TOPIC, 2)
    base, extra = numbered(4_000, 2), numbered(2_000, 2, start=4_000)
    produce([east, west], TOPIC, base)
    produce([east], TOPIC, extra)
    missing = [r for r in extra if r[0] == 0]
    produce([west], TOPIC, [r for r in extra if r[0] == 1])
    assert len(missing) == 1_000
    return east, west, target, base + extra


def _catching_up(port: int, source: str) -> float | None:
    return _series(port, "kafka_lfs_relay_source_catching_up", source=source)


def test_failover_to_a_trailing_standby_waits_for_it_to_catch_up(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """The standby is 1,000 records behind on one partition when the active source is killed -9: the relay
    moves over, reads the other partition on, waits on the short one (log line, metric) without re-reading or
    skipping, and goes on once a copier catches the standby up. Every record arrives exactly once."""
    east, west, target, first = _trailing_pair(cluster_factory)
    missing = [r for r in first if r[0] == 0][-1_000:]
    later = numbered(2_000, 2, start=6_000)
    port = free_port()
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [east, west], target, [{"source": TOPIC}],
            source_pool={"min_dwell": "1h"}, metrics={"listen": f"127.0.0.1:{port}"},
        ),
    )  # fmt: skip
    relay = RelayProcess(config).start()
    wait_for("east's records relayed", lambda: sum(map(len, _count(target, TOPIC, 2).values())) >= 6_000, 90, relay)
    east.kill()
    wait_for("the relay waiting on west's partition 0", lambda: bool(_waits(relay)), 60, relay)
    assert _switches(relay) == [("east", "west", "unreachable")]
    assert "events/0: end 2000, position 3000" in str(_waits(relay)[0]["partitions"])
    wait_for("the catching-up metric", lambda: _catching_up(port, "west") == 1.0, 30, relay)
    # Partition 1 flows from west meanwhile; partition 0 does not move.
    produce([west], TOPIC, [r for r in later if r[0] == 1])
    wait_for("partition 1 relayed from west", lambda: len(_count(target, TOPIC, 2)[1]) >= 4_000, 60, relay)
    assert len(_count(target, TOPIC, 2)[0]) == 3_000

    def copier() -> None:  # a mirror catching the standby up, in order, in a few bursts
        for i in range(0, len(missing), 250):
            produce([west], TOPIC, missing[i : i + 250])
        produce([west], TOPIC, [r for r in later if r[0] == 0])

    thread = threading.Thread(target=copier)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    total = len(first) + len(later)
    wait_for("every record relayed", lambda: sum(map(len, _count(target, TOPIC, 2).values())) >= total, 120, relay)
    wait_for("the catching-up metric back at 0", lambda: _catching_up(port, "west") == 0.0, 30, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert _switches(relay) == [("east", "west", "unreachable")]
    assert_same(records_by_partition(first + later, 2), read_all(target, TOPIC, 2))


def test_a_standby_that_never_catches_up_is_left_when_the_old_source_is_back(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """The standby never gets the 1,000 records it lacks. The relay waits on that partition (never re-reads,
    never skips), and the moment the old source is back holding every position it switches to it, within
    min_dwell (reason behind_position). Every record arrives exactly once."""
    east, west, target, first = _trailing_pair(cluster_factory)
    later, after = numbered(1_000, 2, start=6_000), numbered(2_000, 2, start=7_000)
    later_p1 = [r for r in later if r[0] == 1]
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([east, west], target, [{"source": TOPIC}], source_pool={"min_dwell": "1h"}),
    )
    relay = RelayProcess(config).start()
    wait_for("east's records relayed", lambda: sum(map(len, _count(target, TOPIC, 2).values())) >= 6_000, 90, relay)
    east.kill()
    wait_for("the relay waiting on west's partition 0", lambda: bool(_waits(relay)), 60, relay)
    produce([west], TOPIC, later_p1)
    wait_for("partition 1 relayed from west", lambda: len(_count(target, TOPIC, 2)[1]) >= 3_500, 60, relay)
    east.start()
    # East gets what west got while it was down, so that it holds every position the relay has.
    produce([east], TOPIC, later_p1)
    wait_for("the switch back to east", lambda: len(_switches(relay)) == 2, 60, relay)
    assert _switches(relay) == [("east", "west", "unreachable"), ("west", "east", "behind_position")]
    produce([east], TOPIC, [r for r in later if r[0] == 0] + after)
    produce([west], TOPIC, [r for r in after if r[0] == 1])  # west stays short on partition 0
    expected = first + later_p1 + [r for r in later if r[0] == 0] + after
    total = len(expected)
    wait_for("every record relayed", lambda: sum(map(len, _count(target, TOPIC, 2).values())) >= total, 120, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert len(_switches(relay)) == 2
    assert_same(records_by_partition(expected, 2), read_all(target, TOPIC, 2))


def _delete_below(cluster: KafkaCluster, topic: str, partition: int, offset: int) -> None:
    admin = AdminClient(cluster.client_conf())
    for fut in admin.delete_records([TopicPartition(topic, partition, offset)]).values():
        fut.result(30)


def _retention_gap(tmp_path: Path, cluster: KafkaCluster, topic: str) -> tuple[Records, Records]:
    """Relay 1,000 records per partition and stop; 1,000 more on partition 0; delete partition 0 below 1,500.

    Returns the records that survive, and those deleted before they were relayed.
    """
    first = numbered(2_000, 2)
    produce([cluster], topic, first)
    config = write_config(
        tmp_path / "first.yml", relay_config([cluster], cluster, [{"source": topic, "target": f"{topic}-copy"}])
    )
    relay = RelayProcess(config, "--stop-at-end").start()
    assert relay.wait(90) == 0, relay.log_tail()
    more = [(0, key, value) for _, key, value in numbered(1_000, 1, start=2_000)]
    produce([cluster], topic, more)
    _delete_below(cluster, topic, 0, 1_500)
    return first + more[500:], more[:500]


def test_a_retention_gap_under_on_gap_fail_stops_naming_the_missing_range(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Records deleted before they were relayed stop the relay (exit 1) with one line naming the cluster, topic,
    partition and missing range; nothing after the gap is relayed, nothing jumps to the end."""
    topic = topic_factory(kafka_cluster, partitions=2)
    _retention_gap(tmp_path, kafka_cluster, topic)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": f"{topic}-copy"}]),
    )
    relay = RelayProcess(config, "--stop-at-end").start()
    assert relay.wait(90) == 1, relay.log_tail()
    lines = [line for line in relay.log_text().splitlines() if line.startswith("kafka-lfs-relay: ")]
    assert len(lines) == 1, relay.log_tail()
    assert f"source shared: topic {topic} partition 0: offsets [1000, 1500) were deleted" in lines[0]
    assert_same(records_by_partition(numbered(2_000, 2), 2), read_all(kafka_cluster, f"{topic}-copy", 2))


def test_a_retention_gap_under_on_gap_skip_goes_on_from_the_log_start_and_counts_the_loss(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Under on_gap: skip the relay goes on from the log start, logs the missing range once at error, counts
    the 500 lost records in records_lost_total, and relays every surviving record exactly once."""
    topic = topic_factory(kafka_cluster, partitions=2)
    survivors, _ = _retention_gap(tmp_path, kafka_cluster, topic)
    port = free_port()
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster], kafka_cluster, [{"source": topic, "target": f"{topic}-copy", "on_gap": "skip"}],
            metrics={"listen": f"127.0.0.1:{port}"},
        ),
    )  # fmt: skip
    relay = RelayProcess(config).start()
    want = records_by_partition(survivors, 2)
    wait_for(
        "the surviving records relayed",
        lambda: len(read_all(kafka_cluster, f"{topic}-copy", 2)[0]) >= len(want[0]),
        90,
        relay,
    )
    lost = {"reason": "retention", "topic": topic, "partition": "0"}
    wait_for(
        "the lost records counted",
        lambda: _series(port, "kafka_lfs_relay_records_lost_total", **lost) == 500,
        30,
        relay,
    )
    assert relay.terminate() == 0, relay.log_tail()
    skipped = _events(relay, "records deleted before they were relayed are skipped (on_gap: skip)")
    assert [(e["level"], e["source"], e["topic"], e["partition"], e["missing"], e["records"]) for e in skipped] == [
        ("error", "shared", topic, 0, "[1000, 1500)", 500)
    ]
    assert_same(want, read_all(kafka_cluster, f"{topic}-copy", 2))


def _recreate(cluster: KafkaCluster, topic: str, partitions: int) -> None:
    """Delete ``topic`` and create it again, empty (deletion completes in the background: retried)."""
    admin = AdminClient(cluster.client_conf())
    admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    deadline = time.monotonic() + 60
    while True:
        try:
            create_topic(cluster, topic, partitions)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _forget_topic_ids(cluster: KafkaCluster, name: str, topic: str) -> None:
    """Rewrite relay ``name``'s entries of ``topic`` as a release that kept no topic ids wrote them."""
    positions_topic = default_topic(name)
    newest: dict[bytes, bytes] = {}
    for msg in read_to_end(cluster.client_config(), positions_topic, 1)[0]:
        if msg.key() and msg.key().startswith(f"{name}/{topic}/".encode()) and msg.value() is not None:
            newest[msg.key()] = msg.value()
    assert newest, f"relay {name} wrote no positions for {topic}"
    producer = Producer({**cluster.client_conf(), "transactional.id": f"strip-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for k, value in newest.items():
        entry = decode(value)
        producer.produce(positions_topic, encode(Entry(entry.next, entry.map)), k, partition=0)
    producer.commit_transaction(30)


def test_a_single_source_that_lost_relayed_records_is_waited_for(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Single mode, start-up: the source ends below the positions the target holds (a topic deleted and created
    again, whose positions were written before topic ids were kept, so nothing tells it apart). The relay says
    it waits (log line, metric), relays nothing, and once the source reaches the positions again it goes on
    from exactly there: nothing re-read, nothing skipped."""
    topic = topic_factory(kafka_cluster, partitions=2)
    old = numbered(2_000, 2)
    produce([kafka_cluster], topic, old)
    routes = [{"source": topic, "target": f"{topic}-copy"}]
    first = write_config(tmp_path / "first.yml", relay_config([kafka_cluster], kafka_cluster, routes))
    assert RelayProcess(first, "--stop-at-end").start().wait(90) == 0
    _forget_topic_ids(kafka_cluster, DEFAULT_NAME, topic)
    _recreate(kafka_cluster, topic, 2)
    new = numbered(3_000, 2, start=10_000)
    produce([kafka_cluster], topic, new[:600])
    port = free_port()
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, routes, metrics={"listen": f"127.0.0.1:{port}"}),
    )
    relay = RelayProcess(config).start()
    wait_for("the relay waiting on both partitions", lambda: any(w["waiting"] == 2 for w in _waits(relay)), 60, relay)
    both = next(w for w in _waits(relay) if w["waiting"] == 2)
    assert both["partitions"] == [f"{topic}/0: end 300, position 1000", f"{topic}/1: end 300, position 1000"]
    wait_for("the catching-up metric", lambda: _catching_up(port, "shared") == 2.0, 30, relay)
    assert_same(records_by_partition(old, 2), read_all(kafka_cluster, f"{topic}-copy", 2))
    produce([kafka_cluster], topic, new[600:])
    want = records_by_partition(old + new[2_000:], 2)
    wait_for(
        "the records from the old positions on relayed",
        lambda: sum(map(len, read_all(kafka_cluster, f"{topic}-copy", 2).values())) >= 2_000 + 1_000,
        90,
        relay,
    )
    wait_for("the catching-up metric back at 0", lambda: _catching_up(port, "shared") == 0.0, 30, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert_same(want, read_all(kafka_cluster, f"{topic}-copy", 2))
