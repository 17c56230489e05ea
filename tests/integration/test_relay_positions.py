"""Resume positions live in the positions topic: other writers, retention, new partitions, chains, upgrades."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import threading
import time
from io import BytesIO
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from kafka_lfs_relay.cli import main
from kafka_lfs_relay.sandbox import KafkaCluster, relay_argv
from relay.message import SourcePartition
from relay.settings import ClusterConfig
from targets.kafka.positions import PositionsTopic, default_topic
from tests.conftest import ClusterFactory, TopicFactory
from tests.integration.harness import (
    RelayProcess,
    assert_same,
    committed_count,
    end_offsets,
    numbered,
    produce,
    read_all,
    records_by_partition,
    relay_config,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The last release that kept positions in kfr-pos headers (before the positions topic).
HEADER_RELEASE = "92ab6cf"


def _stop_at_end(config: Path) -> None:
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(180) == 0, relay.log_tail()


def test_forged_positions_written_by_another_producer_move_nothing(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Records with forged kfr-pos headers written to the target topic by another producer leave the resume point."""
    topic = topic_factory(kafka_cluster, partitions=2)
    target_topic = topic_factory(kafka_cluster, partitions=2)
    first, second = numbered(3_000, 2), numbered(2_000, 2, start=3_000)
    produce([kafka_cluster], topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": target_topic}]),
    )
    _stop_at_end(config)
    forged = [("kfr-pos", f"v1 {topic} 0:999999,1:999999".encode())]
    produce([kafka_cluster], target_topic, [(p, b"forger", b"x") for p in (0, 1) for _ in range(50)], forged)
    produce([kafka_cluster], topic, second)
    _stop_at_end(config)
    got = read_all(kafka_cluster, target_topic, 2)
    assert_same(
        records_by_partition(first + second, 2), {p: [r for r in rs if r[0] != b"forger"] for p, rs in got.items()}
    )


def test_target_topic_emptied_by_retention_then_restart_relays_only_new_records(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """After retention removed every record of the target topic, a restart relays the new records and nothing old."""
    topic = topic_factory(kafka_cluster, partitions=2)
    target_topic = topic_factory(kafka_cluster, partitions=2)
    first, second = numbered(3_000, 2), numbered(1_000, 2, start=3_000)
    produce([kafka_cluster], topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": target_topic}]),
    )
    _stop_at_end(config)
    assert committed_count(kafka_cluster, target_topic, 2) == 3_000
    ends = end_offsets(kafka_cluster, target_topic, 2)
    admin = AdminClient(kafka_cluster.client_conf())
    for fut in admin.delete_records([TopicPartition(target_topic, p, ends[p]) for p in range(2)]).values():
        fut.result(30)
    assert committed_count(kafka_cluster, target_topic, 2) == 0
    produce([kafka_cluster], topic, second)
    _stop_at_end(config)
    assert_same(records_by_partition(second, 2), read_all(kafka_cluster, target_topic, 2))


def test_partitions_added_under_key_partitioning_then_kill9_is_exactly_once(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """Source partitions added while running under partition: key keep every partition's position through kill -9."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=2)
    first = numbered(4_000, 2)
    produce([source], topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([source], target, [{"source": topic, "partition": "key"}], target={"batch": {"max_records": 500}}),
    )
    relay = RelayProcess(config).start()
    wait_for("the first records", lambda: committed_count(target, topic, 2) >= 4_000, 90, relay)
    admin = AdminClient(source.client_conf())
    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
    later = numbered(8_000, 4, start=4_000)
    produce([source], topic, later)
    wait_for("records of the new partitions", lambda: committed_count(target, topic, 2) >= 8_000, 90, relay)
    relay.kill9()
    more = numbered(2_000, 4, start=12_000)
    produce([source], topic, more)
    _stop_at_end(config)
    found = read_all(target, topic, 2)
    got = [r for recs in found.values() for r in recs]
    expected = [(k, v) for _, k, v in first + later + more]
    assert len(got) == len(expected) and sorted(got) == sorted(expected)  # exactly once
    for recs in found.values():  # within a target partition, each source partition's records keep their order
        by_source: dict[int, list[int]] = {}
        for _, value in recs:
            assert value is not None
            i = int(value[7:16])  # numbered(): b"record-000000042-..."
            by_source.setdefault(i % 2 if i < 4_000 else i % 4, []).append(i)
        assert all(seq == sorted(seq) for seq in by_source.values())


def test_three_relay_chain_with_a_filter_and_kill9_of_the_middle_relay_is_exactly_once(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """A -> B -> C -> D with the same topic name, a filter in the first relay, the middle relay killed twice."""
    clusters = [cluster_factory(name) for name in ("a", "b", "c", "d")]
    topic = topic_factory(clusters[0], partitions=2)
    for cluster in clusters[1:]:
        topic_factory(cluster, partitions=2, name=topic)
    rows = numbered(20_000, 2)
    filters = [{"name": "some-keys", "type": "key", "config": {"matches": r"^key-[0-9]*[12]$"}}]
    relays = []
    for i in range(3):
        extra = {"filters": filters} if i == 0 else {}
        batch = {"batch": {"max_records": 700}}
        cfg = relay_config([clusters[i]], clusters[i + 1], [{"source": topic}], name=f"hop-{i}", target=batch, **extra)
        relays.append(RelayProcess(write_config(tmp_path / f"hop-{i}.yml", cfg)).start())
    feeder = threading.Thread(target=produce, args=([clusters[0]], topic, rows))
    feeder.start()
    for pause in (3.0, 4.0):
        time.sleep(pause)
        assert relays[1].alive(), relays[1].log_tail()
        relays[1].kill9()
        relays[1].start()
    feeder.join()
    expected = [row for row in rows if _kept(row[1])]
    assert 0 < len(expected) < len(rows)
    wait_for("every kept record at D", lambda: committed_count(clusters[3], topic, 2) >= len(expected), 240)
    for relay in relays:
        assert relay.terminate() == 0, relay.log_tail()
    assert_same(records_by_partition(expected, 2), read_all(clusters[3], topic, 2))


def _kept(key: bytes | None) -> bool:
    return key is not None and key[-1:] in (b"1", b"2")


def _old_release(tmp_path: Path) -> Path:
    """The packages of the release that kept positions in kfr-pos headers, from this repository's history."""
    out = tmp_path / "release"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", HEADER_RELEASE, "relay", "targets", "filters"],
        capture_output=True,
        check=False,
    )
    assert archive.returncode == 0, f"git archive {HEADER_RELEASE} failed: {archive.stderr.decode()}"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    return out


def _run_old_release(release: Path, config: Path) -> None:
    log = config.with_suffix(".old.log")
    with log.open("wb") as out:
        proc = subprocess.run(
            relay_argv(config, "--stop-at-end", module="relay.cli"),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(release)},
            cwd=release,  # python -m puts the working directory first on the path
            timeout=180,
            check=False,
        )
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


def test_upgrade_takes_the_kfr_pos_headers_of_the_old_release_once(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A target written by the header release is resumed exactly from its kfr-pos headers, once, with one log line."""
    release = _old_release(tmp_path)
    topic = topic_factory(kafka_cluster, partitions=2)
    target_topic = topic_factory(kafka_cluster, partitions=2)
    first, second, third = numbered(3_000, 2), numbered(1_000, 2, start=3_000), numbered(500, 2, start=4_000)
    produce([kafka_cluster], topic, first)
    name = f"upgrade-{target_topic}"
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": target_topic}], name=name),
    )
    _run_old_release(release, config)
    assert committed_count(kafka_cluster, target_topic, 2) == 3_000
    produce([kafka_cluster], topic, second)
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(180) == 0, relay.log_tail()
    taken = [line for line in relay.log_text().splitlines() if "kfr-pos headers of an earlier release" in line]
    assert len(taken) == 1 and target_topic in taken[0] and default_topic(name) in taken[0], relay.log_tail()
    produce([kafka_cluster], topic, third)
    assert relay.start().wait(180) == 0, relay.log_tail()
    assert relay.log_text().count("kfr-pos headers of an earlier release") == 1, "the headers were read twice"
    assert_same(records_by_partition(first + second + third, 2), read_all(kafka_cluster, target_topic, 2))


def test_without_the_header_import_a_new_relay_starts_from_the_beginning(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """import_header_positions: false ignores kfr-pos headers in the target: the relay refuses the records it has no
    position for, and with on_existing_data: append starts at the source's start."""
    release = _old_release(tmp_path)
    topic = topic_factory(kafka_cluster, partitions=1)
    target_topic = topic_factory(kafka_cluster, partitions=1)
    first = numbered(1_000, 1)
    produce([kafka_cluster], topic, first)
    routes = [{"source": topic, "target": target_topic}]
    old = write_config(tmp_path / "old.yml", relay_config([kafka_cluster], kafka_cluster, routes, name="no-import"))
    _run_old_release(release, old)
    no_import = {"import_header_positions": False}
    refusing = write_config(
        tmp_path / "refusing.yml",
        relay_config([kafka_cluster], kafka_cluster, routes, name="no-import", target=no_import),
    )
    refused = RelayProcess(refusing, "--stop-at-end")
    assert refused.start().wait(180) == 1, refused.log_tail()
    assert "already holds up to" in refused.log_text() and "on_existing_data: append" in refused.log_text()
    new = write_config(
        tmp_path / "new.yml",
        relay_config(
            [kafka_cluster], kafka_cluster, routes, name="no-import", target={**no_import, "on_existing_data": "append"}
        ),
    )
    relay = RelayProcess(new, "--stop-at-end")
    assert relay.start().wait(180) == 0, relay.log_tail()
    assert "kfr-pos headers" not in relay.log_text()
    assert committed_count(kafka_cluster, target_topic, 1) == 2_000  # the opt-out re-relays, as documented


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"garbage", "not JSON"),
        (json.dumps({"v": 1, "next": 99999999999999999999}).encode(), "is not an offset"),
        (json.dumps({"v": 7, "next": 5}).encode(), "unknown version 7"),
    ],
)
def test_an_entry_that_cannot_be_read_stops_the_relay_with_one_line(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory, value: bytes, why: str
) -> None:
    """A positions record of this relay that this version cannot read, or an absurd offset, stops it with one line."""
    topic = topic_factory(kafka_cluster, partitions=1)
    positions_topic = topic_factory(kafka_cluster, partitions=1, config={"cleanup.policy": "compact"})
    produce([kafka_cluster], topic, numbered(10, 1))
    name = f"bad-{positions_topic}"
    producer = Producer(kafka_cluster.client_conf())
    producer.produce(positions_topic, value, f"{name}/{topic}/0".encode(), partition=0)
    assert producer.flush(30) == 0
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster], kafka_cluster, [{"source": topic, "target": f"{topic}-out"}], name=name,
            target={"positions_topic": positions_topic},
        ),
    )  # fmt: skip
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 1, relay.log_tail()
    last = relay.log_text().strip().splitlines()[-1]
    assert last.startswith("kafka-lfs-relay: ") and positions_topic in last and why in last, last
    assert f"{topic}/0" in last and "Traceback" not in relay.log_text()


@pytest.mark.parametrize(
    ("policy", "partitions", "why"),
    [
        ("delete", 1, "has cleanup.policy=delete; it must be exactly compact"),
        ("compact,delete", 1, "has cleanup.policy=compact,delete; it must be exactly compact"),
        ("compact", 3, "has 3 partitions; it must have exactly 1"),
    ],
)
def test_a_positions_topic_that_is_not_compacted_with_one_partition_is_refused(
    tmp_path: Path,
    kafka_cluster: KafkaCluster,
    topic_factory: TopicFactory,
    capsys: pytest.CaptureFixture[str],
    policy: str,
    partitions: int,
    why: str,
) -> None:
    """check and the relay refuse a positions topic whose entries could expire or whose partitions could disagree."""
    topic = topic_factory(kafka_cluster, partitions=1)
    produce([kafka_cluster], topic, numbered(10, 1))
    positions_topic = topic_factory(kafka_cluster, partitions=partitions, config={"cleanup.policy": policy})
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster], kafka_cluster, [{"source": topic, "target": f"{topic}-out"}],
            target={"positions_topic": positions_topic},
        ),
    )  # fmt: skip
    capsys.readouterr()
    assert main(["check", "--config", str(config)]) == 1
    assert f"PROBLEM positions topic {positions_topic!r} {why}" in capsys.readouterr().out
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 1, relay.log_tail()
    last = relay.log_text().strip().splitlines()[-1]
    assert last.startswith(f"kafka-lfs-relay: target target: positions topic {positions_topic!r} {why}"), last
    assert committed_count(kafka_cluster, f"{topic}-out", 1) == 0


def _entries(cluster: KafkaCluster, name: str, topic: str, partitions: int) -> dict[int, int]:
    """The relay's committed next offset per source partition, read from its positions topic."""
    wanted = [SourcePartition(topic, p) for p in range(partitions)]
    props = cluster.client_config()
    target = ClusterConfig("target", props.pop("bootstrap.servers"), props)
    found = PositionsTopic(target, default_topic(name), name, 60).read(wanted)
    return {sp.partition: entry.next for sp, entry in found.items()}


def test_records_a_filter_drops_at_the_end_still_move_the_position(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """When a filter drops the last records of a partition, the position still moves past them: not read again."""
    topic = topic_factory(kafka_cluster, partitions=1)
    records = numbered(1_000, 1)
    produce([kafka_cluster], topic, records)
    name = f"filtered-{topic}"
    drop_tail = [{"name": "no-9xx", "type": "key", "config": {"matches": r"^key-9\d\d$", "invert": True}}]
    routes = [{"source": topic, "target": f"{topic}-copy"}]
    config = write_config(
        tmp_path / "relay.yml", relay_config([kafka_cluster], kafka_cluster, routes, name=name, filters=drop_tail)
    )
    _stop_at_end(config)
    assert _entries(kafka_cluster, name, topic, 1) == {0: 1_000}
    kept = [(k, v) for _, k, v in records if not (k or b"").startswith(b"key-9") or len(k or b"") != 7]
    assert read_all(kafka_cluster, f"{topic}-copy", 1)[0] == kept and len(kept) == 900


def test_a_skipped_gap_with_nothing_after_it_is_reported_once(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A gap skipped under on_gap: skip moves the stored position past it, so a restart does not report it again."""
    topic = topic_factory(kafka_cluster, partitions=1)
    produce([kafka_cluster], topic, numbered(1_000, 1))
    name = f"skipped-{topic}"
    routes = [{"source": topic, "target": f"{topic}-copy", "on_gap": "skip"}]
    config = write_config(tmp_path / "relay.yml", relay_config([kafka_cluster], kafka_cluster, routes, name=name))
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 0, relay.log_tail()
    produce([kafka_cluster], topic, numbered(500, 1, start=1_000))
    admin = AdminClient(kafka_cluster.client_conf())
    for fut in admin.delete_records([TopicPartition(topic, 0, 1_500)]).values():
        fut.result(30)
    for _ in range(2):
        assert relay.start().wait(120) == 0, relay.log_tail()
    assert relay.log_text().count("records deleted before they were relayed are skipped") == 1, relay.log_tail()
    assert _entries(kafka_cluster, name, topic, 1) == {0: 1_500}
    assert committed_count(kafka_cluster, f"{topic}-copy", 1) == 1_000


def _maps(cluster: KafkaCluster, name: str, topic: str, partitions: int) -> dict[int, tuple[int, tuple[int, int]]]:
    """The relay's committed next offset and newest map point per source partition (with a map)."""
    wanted = [SourcePartition(topic, p) for p in range(partitions)]
    props = cluster.client_config()
    target = ClusterConfig("target", props.pop("bootstrap.servers"), props)
    found = PositionsTopic(target, default_topic(name), name, 60).read(wanted)
    return {sp.partition: (entry.next, entry.map[-1]) for sp, entry in found.items() if entry.map}


def test_an_idle_relay_writes_its_last_map_points_and_kill9_after_them_is_exactly_once(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """A running relay with nothing more to relay writes each partition's point at its position within seconds."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=2)
    # Enough later records (90 transactions of 100) that the kill lands while they flow: killed after its
    # last commit but before that commit's late points, the relay would leave nothing for the next run to write.
    first, more = numbered(1_000, 2), numbered(9_000, 2, start=1_000)
    produce([source], topic, first)
    name = f"late-{topic}"
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([source], target, [{"source": topic}], name=name, target={"batch": {"max_records": 100}}),
    )
    relay = RelayProcess(config).start()
    wait_for("the first records", lambda: committed_count(target, topic, 2) == 1_000, 90, relay)
    # The target partitions hold 500 records each, with one commit marker after each transaction's:
    # the newest point is (500, the offset after the last record), at the position.
    ends = end_offsets(target, topic, 2)
    expected = {p: (500, (500, ends[p] - 1)) for p in (0, 1)}
    wait_for("the last map points", lambda: _maps(target, name, topic, 2) == expected, 30, relay)
    produce([source], topic, more)
    wait_for("some later records", lambda: committed_count(target, topic, 2) > 1_200, 90, relay)
    relay.kill9()
    _stop_at_end(config)
    assert_same(records_by_partition(first + more, 2), read_all(target, topic, 2))
    ends = end_offsets(target, topic, 2)
    assert _maps(target, name, topic, 2) == {p: (5_000, (5_000, ends[p] - 1)) for p in (0, 1)}
