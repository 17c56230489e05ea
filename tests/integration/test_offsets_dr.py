"""Failing consumers over to the target: group offsets translated and synced, checked record by record."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.cli import main
from kafka_lfs_relay.sandbox import KafkaCluster
from relay.message import SourcePartition
from relay.settings import ClusterConfig
from targets.kafka import positions
from targets.kafka.groups import PositionsTail
from targets.kafka.positions import Entry, PositionsTopic, default_topic
from tests.conftest import ClusterFactory, TopicFactory, create_topic
from tests.integration.harness import (
    RelayProcess,
    committed_count,
    numbered,
    produce,
    read_all,
    relay_config,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

TOPIC = "events"
Row = tuple[bytes | None, bytes | None]


def commit_on(cluster: KafkaCluster, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` (partition -> next offset) for ``group`` on ``cluster``, as a consumer would have,
    and read them back, for up to a minute: on a fresh cluster the offsets topic is still being created, and
    the commit can fail partition by partition without the call failing, or the call or the read-back can
    fail while its coordinator loads."""
    admin = AdminClient(cluster.client_conf())
    tps = [TopicPartition(topic, p, off) for p, off in offsets.items()]
    deadline = time.monotonic() + 60
    while True:
        error: KafkaException | None = None
        try:
            admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group].result(30)
            got = target_offsets(cluster, group)
        except KafkaException as exc:
            got, error = {}, exc
        if all(got.get((topic, p)) == off for p, off in offsets.items()):
            return
        assert time.monotonic() < deadline, f"group {group} on {cluster.name}: committed {offsets}, reads {got} {error}"
        time.sleep(0.5)


def target_offsets(cluster: KafkaCluster, group: str) -> dict[tuple[str, int], int]:
    admin = AdminClient(cluster.client_conf())
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions or [] if tp.offset >= 0}


def consume_as(
    cluster: KafkaCluster, group: str, topic: str, partitions: int, timeout: float = 60
) -> dict[int, list[Row]]:
    """What a consumer of ``group`` reads from its committed offsets to the end (an uncommitted partition fails)."""
    consumer = Consumer(
        {
            **cluster.client_conf(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",
        }
    )
    consumer.subscribe([topic])
    out: dict[int, list[Row]] = {p: [] for p in range(partitions)}
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"group {group} did not reach the end of {topic}"
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                partition = msg.partition() or 0
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    at_end.add(partition)
                    continue
                at_end.discard(partition)
                out[partition].append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return out


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real command line in this process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def reread_of(source: list[Row], committed: int, got: list[Row]) -> int:
    """How many records before ``committed`` a consumer reading ``got`` read again; fails if ``got`` is not
    exactly a contiguous suffix of ``source`` reaching back to ``committed`` or before (nothing missing)."""
    start = len(source) - len(got)
    assert start <= committed, f"{committed - start} records at or after the group's position were skipped"
    assert got == source[start:], "the records read on the target are not the source's, in order, to the end"
    return committed - start


def test_groups_synced_after_failover_and_kill9_resume_exactly_where_they_were(
    tmp_path: Path, cluster_factory: ClusterFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Groups at several source positions, synced after a failover and a kill -9 of the relay, read exactly the
    records after their position on the target, re-reading none at a batch boundary and less than one batch
    elsewhere."""
    east, west, target = cluster_factory("east"), cluster_factory("west"), cluster_factory("target")
    for cluster in (east, west):
        create_topic(cluster, TOPIC, 2)
    phase1, phase2, phase3 = numbered(3_000, 2), numbered(2_000, 2, start=3_000), numbered(1_000, 2, start=5_000)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [east, west], target, [{"source": TOPIC}], name="dr",
            target={"batch": {"max_records": 800, "linger": "300ms"}},
        ),
    )  # fmt: skip
    produce([east, west], TOPIC, phase1)
    relay = RelayProcess(config).start()
    wait_for("phase 1 relayed", lambda: committed_count(target, TOPIC, 2) >= 3_000, 90, relay)
    east.kill()
    produce([west], TOPIC, phase2)
    wait_for("phase 2 relayed from west", lambda: committed_count(target, TOPIC, 2) >= 5_000, 90, relay)
    relay.kill9()
    produce([west], TOPIC, phase3)
    relay.start()
    wait_for("phase 3 relayed after the kill", lambda: committed_count(target, TOPIC, 2) >= 6_000, 90, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert "switching source" in relay.log_text()

    source = read_all(west, TOPIC, 2)
    dr = ClusterConfig("target", target.client_config()["bootstrap.servers"])
    entries = PositionsTopic(dr, default_topic("dr"), "dr", 60).read([SourcePartition(TOPIC, p) for p in (0, 1)])
    maps = {p: [s for s, _ in entries[SourcePartition(TOPIC, p)].map] for p in (0, 1)}
    for p in (0, 1):
        assert len(maps[p]) >= 4 and maps[p][-1] == len(source[p]), maps[p]

    def boundary(p: int, i: int) -> int:
        return maps[p][i]

    def mid(p: int, i: int) -> int:  # inside the transaction that ends at point i
        return (maps[p][i - 1] + maps[p][i]) // 2

    # Positions across the whole history: before the failover, after it, after the kill -9, at the ends.
    groups = {
        "at-zero": {0: 0, 1: 0},
        "boundary-early": {0: boundary(0, 0), 1: boundary(1, 1)},
        "boundary-late": {0: boundary(0, -2), 1: boundary(1, -1)},
        "mid-early": {0: mid(0, 1), 1: mid(1, 2)},
        "mid-late": {0: mid(0, -1), 1: mid(1, -2)},
        "uneven": {0: 1, 1: len(source[1]) - 1},
    }
    measured: dict[str, dict[int, int]] = {}
    for i, (name, offsets) in enumerate(groups.items()):
        group = f"app-{name}"
        commit_on(west, group, TOPIC, offsets)  # east is gone: the group's offsets are read on west
        # Every source is asked by default; east does not answer (each call waits for it), so only the
        # first group is synced that way, the others name west.
        only = () if i == 0 else ("--source", "west")
        code, out, err = cli(capsys, "offsets", "translate", "--config", str(config), "--group", group, "--json", *only)
        assert code == 0, err
        report = {row["partition"]: row for row in json.loads(out)["partitions"]}
        code, out, err = cli(capsys, "offsets", "sync", "--config", str(config), "--group", group, *only)
        assert code == 0 and ("east did not answer" in out) == (i == 0), (out, err)
        got = consume_as(target, group, TOPIC, 2)
        measured[name] = {}
        for p, committed in offsets.items():
            reread = reread_of(source[p], committed, got[p])
            measured[name][p] = reread
            assert reread <= report[p]["reread_at_most"], (name, p, report[p])
            if committed in maps[p]:
                assert reread == 0 and report[p]["exact"], (name, p, report[p])
            elif committed > maps[p][0]:
                below = max(s for s in maps[p] if s <= committed)
                above = min(s for s in maps[p] if s > committed)
                assert reread == committed - below < above - below, (name, p, maps[p])  # less than one batch
    print("re-read per group and partition:", measured, "map points:", maps)
    assert all(measured[g][p] == 0 for g in ("boundary-early", "boundary-late") for p in (0, 1))
    assert all(measured[g][p] > 0 for g in ("mid-early", "mid-late") for p in (0, 1))


def test_sync_refuses_a_group_with_an_active_member_on_the_target(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a consumer of the group is active on the target, offsets sync (and its dry run) refuses, naming the
    group, and commits nothing."""
    topic = topic_factory(kafka_cluster, partitions=1)
    target_topic = topic_factory(kafka_cluster, partitions=1)
    produce([kafka_cluster], topic, numbered(500, 1))
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster], kafka_cluster, [{"source": topic, "target": target_topic}], name=f"r-{topic}",
            target={"batch": {"max_records": 100}},
        ),
    )  # fmt: skip
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 0, relay.log_tail()
    group = f"busy-{uuid.uuid4().hex[:6]}"
    commit_on(kafka_cluster, group, topic, {0: 200})
    member = Consumer(
        {**kafka_cluster.client_conf(), "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    member.subscribe([target_topic])
    try:
        deadline = time.monotonic() + 60
        while not member.assignment():
            assert time.monotonic() < deadline, "the member never got its assignment"
            member.poll(0.2)
        for extra in ((), ("--dry-run",)):
            code, out, err = cli(capsys, "offsets", "sync", "--config", str(config), "--group", group, *extra)
            assert code == 1 and f"group {group!r} has 1 active member(s)" in err, (out, err)
        assert (target_topic, 0) not in target_offsets(kafka_cluster, group)
    finally:
        member.close()
    code, out, err = cli(capsys, "offsets", "translate", "--config", str(config), "--group", group, "--json")
    assert code == 0, err
    translated = json.loads(out)["partitions"][0]
    assert translated["exact"] and 200 < translated["target_offset"] <= 202  # 200 records and a marker per batch
    code, out, err = cli(capsys, "offsets", "sync", "--config", str(config), "--group", group)
    assert code == 0, err
    assert target_offsets(kafka_cluster, group)[(target_topic, 0)] == translated["target_offset"]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _metric(port: int, name: str, group: str) -> float | None:
    for line in _metrics(port).splitlines():
        if line.startswith(f"kafka_lfs_relay_{name}{{") and f'group="{group}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_first_read_of_a_positions_tail_waits_for_every_partition_end(
    kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A fresh tail's first read returns every committed entry even when the first fetch is held for 2 s."""
    positions_topic = topic_factory(kafka_cluster, partitions=3, config={"cleanup.policy": "compact"})
    name = f"tail-{positions_topic}"
    entries = {SourcePartition(TOPIC, p): Entry(100 + p, ((50, 10 * p), (100 + p, 10 * p + 5))) for p in range(40)}
    producer = Producer({**kafka_cluster.client_conf(), "transactional.id": f"tail-{positions_topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i, (key, value) in enumerate(positions.records(name, entries)):
        producer.produce(positions_topic, value, key, partition=i % 2)  # partition 2 stays empty
    producer.commit_transaction(30)
    # The broker holds a fetch until 100 MB arrived or 2 s passed: the first polls come back empty, which
    # is not the end of the topic.
    slow = ClusterConfig(
        "target", kafka_cluster.bootstrap_servers, {"fetch.min.bytes": "100000000", "fetch.wait.max.ms": "2000"}
    )
    tail = PositionsTail(slow, positions_topic, name, timeout=60)
    try:
        assert tail.read(set(entries)) == entries
    finally:
        tail.close()


def test_background_sync_follows_groups_both_ways_and_leaves_consumers_commits_and_active_groups_alone(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """group_offsets syncs matching groups while the relay runs, through a filter: a group rewound on the
    source is rewound on the target, so a consumer switching then misses no kept record after the rewound
    position; a consumer's own commit on the target is never moved back, a group with members never touched,
    and the re-read is exported as a metric."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=2)
    rows = numbered(4_000, 2)
    produce([source], topic, rows)
    port = 19_000 + uuid.uuid4().int % 1_000
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [source], target, [{"source": topic}], name="bg",
            filters=[{"name": "low-digits", "type": "key", "config": {"matches": r"^key-[0-9]*[0-4]$"}}],
            group_offsets={"groups": ["shop-.*"], "interval": "1s"},
            log={"level": "debug", "format": "json"},  # each group's outcome per pass, in the log a failure shows
            metrics={"listen": f"127.0.0.1:{port}"},
            # Small transactions, so the offset map has a point every ~200 source offsets: the positions
            # below (1,000 / 1,500 / 1,990) then translate to three different target offsets. With 500,
            # under load, two of them could fall behind the same point and the rewind moved nothing.
            target={"batch": {"max_records": 100}},
        ),
    )  # fmt: skip
    commit_on(source, "shop-follow", topic, {0: 777, 1: 1_500})
    commit_on(source, "shop-behind", topic, {0: 100, 1: 100})
    commit_on(source, "other-app", topic, {0: 500, 1: 500})  # matches no pattern: never synced
    relay = RelayProcess(config).start()
    try:
        wait_for("kept records relayed", lambda: committed_count(target, topic, 2) >= 2_000, 90, relay)
        commit_on(target, "shop-behind", topic, {0: 900, 1: 900})  # ahead on the target: it must stay there
        wait_for(
            "shop-follow synced",
            lambda: target_offsets(target, "shop-follow").keys() >= {(topic, 0), (topic, 1)},
            30,
            relay,
        )
        lag = _metric(port, "group_offsets_translation_lag_records", "shop-follow")
        assert lag is not None and lag >= 0
        # A member joins on the target, and the group moves on at the source: the target copy stays put.
        before = target_offsets(target, "shop-follow")
        # It joins and commits nothing: with auto-commit it would move the group itself when it closes.
        member = Consumer(
            {
                **target.client_conf(),
                "group.id": "shop-follow",
                "auto.offset.reset": "error",
                "enable.auto.commit": False,
            }
        )
        member.subscribe([topic])
        try:
            deadline = time.monotonic() + 60
            while not member.assignment():
                assert time.monotonic() < deadline
                member.poll(0.2)
            commit_on(source, "shop-follow", topic, {0: 1_900, 1: 1_990})
            found = 'kafka_lfs_relay_group_offsets_syncs_total{group="shop-follow",outcome="active_members"}'
            wait_for("a sync pass that found the member", lambda: found in _metrics(port), 30, relay)
            time.sleep(2)  # two more passes
            assert target_offsets(target, "shop-follow") == before
        finally:
            member.close()
        wait_for("shop-follow synced again", lambda: target_offsets(target, "shop-follow") != before, 30, relay)
        ahead = target_offsets(target, "shop-follow")
        # Reprocessing on the source: the group is rewound there, and the target copy follows it back.
        commit_on(source, "shop-follow", topic, {0: 333, 1: 1_000})
        wait_for(
            "shop-follow rewound on the target",
            lambda: all(off < ahead[tp] for tp, off in target_offsets(target, "shop-follow").items()),
            30,
            relay,
        )
    finally:
        assert relay.terminate() == 0, relay.log_tail()
    assert target_offsets(target, "shop-behind") == {(topic, 0): 900, (topic, 1): 900}
    assert target_offsets(target, "other-app") == {}
    # Switching now: every kept record at or after the group's rewound source position is read on the target.
    kept = {p: [(k, v) for q, k, v in rows if q == p and int(k[4:]) % 10 < 5] for p in (0, 1)}
    position = {0: 333, 1: 1_000}
    got = consume_as(target, "shop-follow", topic, 2)
    for p in (0, 1):
        source_offsets = [i // 2 for i, (q, k, _) in enumerate(rows) if q == p and int(k[4:]) % 10 < 5]
        wanted = [rec for rec, off in zip(kept[p], source_offsets, strict=True) if off >= position[p]]
        assert got[p][len(got[p]) - len(wanted) :] == wanted and len(got[p]) >= len(wanted)
        assert got[p] == kept[p][len(kept[p]) - len(got[p]) :], "records out of order or not the kept ones"
