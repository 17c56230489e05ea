"""Operations are faults too: partitions added, a relay renamed, target and source topics deleted and recreated,
each done while records flow, and checked record by record with every field.

Every test shares the session cluster (no broker is killed) and keeps its record counts small.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster
from tests.conftest import TopicFactory, create_topic
from tests.integration.harness import RelayProcess, relay_config, wait_for, write_config
from tests.integration.lfs_harness import free_port
from tests.integration.ops_support import (
    Feed,
    FullByPartition,
    add_partitions,
    assert_copied,
    delete_topic,
    events,
    full,
    last_line,
    partition_count,
    recreate_topic,
    varied,
)

pytestmark = pytest.mark.integration


def _count(records: FullByPartition) -> int:
    return sum(len(recs) for recs in records.values())


def _caught_up(source: KafkaCluster, topic: str, target: str, relay: RelayProcess, parts: int) -> None:
    """Wait until the target holds as many records as the source (the feed is stopped or paused)."""
    want = _count(full(source, topic, parts))
    wait_for(f"{want} records on {target}", lambda: _count(full(source, target, parts)) >= want, 90, relay)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafka_lfs_relay", *args], capture_output=True, text=True, timeout=120, check=False
    )


def _metric(port: int, name: str, **labels: str) -> float:
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in /metrics")


def test_a_partition_added_to_the_source_grows_the_target_topic_before_it_is_relayed(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Under preserve, a partition added to the source while records flow grows the target topic the relay
    created, and every record of the new partition lands in the same partition number, exactly once."""
    topic = topic_factory(kafka_cluster, partitions=2)
    copy = f"{topic}-copy"
    config = write_config(
        tmp_path / "relay.yml", relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": copy}])
    )
    feed = Feed(kafka_cluster, topic, lambda: partition_count(kafka_cluster, topic)).start()
    relay = RelayProcess(config).start()
    wait_for("the first records", lambda: _count(full(kafka_cluster, copy, 2)) >= 40, 60, relay)
    add_partitions(kafka_cluster, topic, 3)
    wait_for("the target topic grown", lambda: partition_count(kafka_cluster, copy) == 3, 60, relay)
    wait_for("records of the new partition", lambda: len(full(kafka_cluster, copy, 3)[2]) >= 10, 60, relay)
    feed.stop()
    _caught_up(kafka_cluster, topic, copy, relay, 3)
    assert relay.terminate() == 0, relay.log_tail()
    assert_copied(full(kafka_cluster, topic, 3), full(kafka_cluster, copy, 3))
    grown = events(relay, "target topic grown like its source")
    assert [(e["topic"], e["partitions_before"], e["partitions"]) for e in grown] == [(copy, 2, 3)]


def test_a_partition_added_while_workers_share_the_source_grows_the_target_topic(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """With two workers in group mode, a partition added while records flow is assigned, the target topic
    grows first, and every record arrives once in its partition."""
    topic = topic_factory(kafka_cluster, partitions=2)
    copy = f"{topic}-copy"
    cfg = relay_config([kafka_cluster], kafka_cluster, [{"source": topic, "target": copy}], name=f"w-{topic}")
    # Group members learn of new partitions from metadata, refreshed every second here (default: 5 minutes).
    cfg["sources"][0]["kafka"] = {**cfg["sources"][0].get("kafka", {}), "topic.metadata.refresh.interval.ms": 1000}
    config = write_config(tmp_path / "relay.yml", cfg)
    feed = Feed(kafka_cluster, topic, lambda: partition_count(kafka_cluster, topic)).start()
    relay = RelayProcess(config, "--workers", "2").start()
    wait_for("the first records", lambda: _count(full(kafka_cluster, copy, 2)) >= 40, 90, relay)
    add_partitions(kafka_cluster, topic, 3)
    wait_for("records of the new partition", lambda: partition_count(kafka_cluster, copy) == 3
             and len(full(kafka_cluster, copy, 3)[2]) >= 10, 90, relay)  # fmt: skip
    feed.stop()
    _caught_up(kafka_cluster, topic, copy, relay, 3)
    assert relay.terminate() == 0, relay.log_tail()
    assert_copied(full(kafka_cluster, topic, 3), full(kafka_cluster, copy, 3))


def test_a_target_topic_the_relay_may_not_grow_stops_it_with_one_line(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """With create_topics: false, a source that has more partitions than the target stops the relay (exit 1)
    with one line naming the topic and both counts; nothing is written."""
    topic = topic_factory(kafka_cluster, partitions=3)
    copy = create_topic(kafka_cluster, f"{topic}-copy", 2)
    feed = Feed(kafka_cluster, topic, lambda: 3).start()
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster], kafka_cluster, [{"source": topic, "target": copy}], target={"create_topics": False}
        ),
    )
    relay = RelayProcess(config).start()
    assert relay.wait(60) == 1, relay.log_tail()
    feed.stop()
    line = last_line(relay)
    assert copy in line and "3 partitions" in line and "has 2" in line and "create_topics" in line, line
    assert _count(full(kafka_cluster, copy, 2)) == 0


def _named(cluster: KafkaCluster, topic: str, copy: str, name: str, **extra: Any) -> dict[str, Any]:
    target = {"transaction_timeout": "5s", **extra.pop("target", {})}
    return relay_config([cluster], cluster, [{"source": topic, "target": copy}], name=name, target=target, **extra)


def test_a_renamed_relay_refuses_to_copy_again_and_positions_copy_takes_over_exactly(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A relay renamed in its config refuses the target the old name filled (exit 1, one line with the topic,
    the record count and both ways on); positions copy refuses while the old relay has just written, then takes
    its positions over, and the renamed relay goes on exactly where the old one stopped."""
    topic = topic_factory(kafka_cluster, partitions=2)
    copy = f"{topic}-copy"
    old, new = f"fk-{uuid.uuid4().hex[:6]}", f"fk2-{uuid.uuid4().hex[:6]}"
    old_cfg = write_config(tmp_path / "old.yml", _named(kafka_cluster, topic, copy, old))
    new_cfg = write_config(tmp_path / "new.yml", _named(kafka_cluster, topic, copy, new))
    feed = Feed(kafka_cluster, topic, lambda: 2).start()
    first = RelayProcess(old_cfg).start()
    wait_for("the first records", lambda: _count(full(kafka_cluster, copy, 2)) >= 60, 60, first)
    refused = _cli("positions", "copy", "--from", old, "--config", str(new_cfg))
    assert refused.returncode == 1 and "may still be running" in refused.stderr, refused.stderr
    assert first.terminate() == 0, first.log_tail()
    stopped = time.monotonic()
    held = _count(full(kafka_cluster, copy, 2))

    renamed = RelayProcess(new_cfg).start()
    assert renamed.wait(60) == 1, renamed.log_tail()
    line = last_line(renamed)
    assert f"{copy!r} partition" in line and "records" in line, line
    assert "positions copy --from" in line and "on_existing_data: append" in line, line

    time.sleep(max(0.0, stopped + 5.5 - time.monotonic()))  # the old relay idle for its transaction timeout
    done = _cli("positions", "copy", "--from", old, "--config", str(new_cfg))
    assert done.returncode == 0, done.stderr
    assert "copied 2 position(s)" in done.stdout, done.stdout
    again = _cli("positions", "copy", "--from", old, "--config", str(new_cfg))
    assert again.returncode == 1 and "already has positions" in again.stderr, again.stderr

    renamed.start()
    feed.stop()
    _caught_up(kafka_cluster, topic, copy, renamed, 2)
    assert renamed.terminate() == 0, renamed.log_tail()
    assert _count(full(kafka_cluster, copy, 2)) > held
    assert_copied(full(kafka_cluster, topic, 2), full(kafka_cluster, copy, 2))


def test_two_relays_with_one_name_and_different_transactional_ids_are_refused(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A relay whose name's positions were written by another transactional id stops (exit 1) with one line,
    and writes nothing."""
    topic = topic_factory(kafka_cluster, partitions=1)
    copy = f"{topic}-copy"
    name = f"same-{uuid.uuid4().hex[:6]}"
    feed = Feed(kafka_cluster, topic, lambda: 1).start()
    first = write_config(tmp_path / "a.yml", _named(kafka_cluster, topic, copy, name, target={"transactional_id": "a"}))
    relay = RelayProcess(first).start()
    wait_for("the first records", lambda: _count(full(kafka_cluster, copy, 1)) >= 20, 60, relay)
    second = write_config(
        tmp_path / "b.yml", _named(kafka_cluster, topic, copy, name, target={"transactional_id": "b"})
    )
    other = RelayProcess(second).start()
    assert other.wait(60) == 1, other.log_tail()
    line = last_line(other)
    assert "'a'" in line and "'b'" in line and name in line, line
    feed.stop()
    _caught_up(kafka_cluster, topic, copy, relay, 1)
    assert relay.terminate() == 0, relay.log_tail()
    assert_copied(full(kafka_cluster, topic, 1), full(kafka_cluster, copy, 1))


def _group_at(cluster: KafkaCluster, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({**cluster.client_conf(), "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def test_a_recreated_target_topic_starts_a_new_offset_map_and_never_bricks(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """The target topic deleted while records flow and recreated by the relay: a WARNING, the relay goes on from
    its position, every later start works, the new topic holds exactly the records from there on, and a group
    committed before that point is refused by offsets translate with one line."""
    topic = topic_factory(kafka_cluster, partitions=2)
    copy = f"{topic}-copy"
    config = write_config(
        tmp_path / "relay.yml",
        _named(kafka_cluster, topic, copy, f"tr-{uuid.uuid4().hex[:6]}"),
    )
    feed = Feed(kafka_cluster, topic, lambda: 2).start()
    relay = RelayProcess(config).start()
    wait_for("the first records", lambda: _count(full(kafka_cluster, copy, 2)) >= 40, 60, relay)
    assert relay.terminate() == 0, relay.log_tail()
    before = {p: len(recs) for p, recs in full(kafka_cluster, copy, 2).items()}
    delete_topic(kafka_cluster, copy)
    relay.start()
    wait_for("records on the new target topic", lambda: _count(full(kafka_cluster, copy, 2)) >= 20, 60, relay)
    assert relay.terminate() == 0, relay.log_tail()
    relay.start()  # the start that refused for good before: "map points do not grow"
    feed.stop()
    _caught_up_from(kafka_cluster, topic, copy, relay, before)
    assert relay.terminate() == 0, relay.log_tail()
    warned = events(relay, "target topic was recreated; a new offset map starts")
    assert len(warned) == 1 and warned[0]["level"] == "warning" and warned[0]["old_id"] != warned[0]["new_id"]
    source = full(kafka_cluster, topic, 2)
    assert_copied({p: recs[before[p] :] for p, recs in source.items()}, full(kafka_cluster, copy, 2))

    group = f"g-{uuid.uuid4().hex[:6]}"
    _group_at(kafka_cluster, group, topic, {0: max(0, before[0] - 5), 1: before[1]})
    refused = _cli("offsets", "translate", "--config", str(config), "--group", group)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "recreated" in refused.stderr and f"{topic}/0" in refused.stderr, refused.stderr
    _group_at(kafka_cluster, group, topic, {0: len(source[0]), 1: len(source[1])})
    done = _cli("offsets", "translate", "--config", str(config), "--group", group, "--json")
    assert done.returncode == 0, done.stderr


def _caught_up_from(
    source: KafkaCluster, topic: str, target: str, relay: RelayProcess, skipped: dict[int, int]
) -> None:
    want = _count(full(source, topic, 2)) - sum(skipped.values())
    wait_for(f"{want} records on {target}", lambda: _count(full(source, target, 2)) >= want, 90, relay)


def _fed_relay(
    tmp_path: Path, cluster: KafkaCluster, topic_factory: TopicFactory
) -> tuple[str, str, int, Feed, RelayProcess]:
    """A 2-partition topic fed from a thread, and a relay copying it to ``<topic>-copy`` with metrics on a port:
    the topic, the copy, the port, the feed and the started relay."""
    topic = topic_factory(cluster, partitions=2)
    copy = f"{topic}-copy"
    port = free_port()
    config = write_config(
        tmp_path / "relay.yml",
        _named(cluster, topic, copy, f"sr-{uuid.uuid4().hex[:6]}", metrics={"listen": f"127.0.0.1:{port}"}),
    )
    feed = Feed(cluster, topic, lambda: 2).start()
    return topic, copy, port, feed, RelayProcess(config).start()


def test_a_recreated_source_topic_is_relayed_from_its_beginning(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A source topic deleted and recreated, then fed past the relay's old position before the restart: every
    record of the new topic is relayed after the old ones, with one WARNING naming both topic ids and the
    count in source_topic_recreated_total."""
    topic, copy, port, feed, relay = _fed_relay(tmp_path, kafka_cluster, topic_factory)
    wait_for("the first records", lambda: _count(full(kafka_cluster, copy, 2)) >= 40, 60, relay)
    feed.pause()
    _caught_up(kafka_cluster, topic, copy, relay, 2)
    assert relay.terminate() == 0, relay.log_tail()
    old = full(kafka_cluster, topic, 2)
    recreate_topic(kafka_cluster, topic, 2)
    feed.resume()
    wait_for(
        "the new topic past the old positions",
        lambda: all(len(recs) > len(old[p]) + 5 for p, recs in full(kafka_cluster, topic, 2).items()),
        60,
    )
    relay.start()
    feed.stop()
    new = full(kafka_cluster, topic, 2)
    want = {p: old[p] + new[p] for p in old}
    wait_for("every record", lambda: _count(full(kafka_cluster, copy, 2)) >= _count(want), 90, relay)
    assert _metric(port, "kafka_lfs_relay_source_topic_recreated_total", topic=topic) == 1.0
    assert relay.terminate() == 0, relay.log_tail()
    assert_copied(want, full(kafka_cluster, copy, 2))
    warned = events(relay, "source topic was recreated; its records are relayed from its beginning")
    assert len(warned) == 1 and warned[0]["level"] == "warning" and warned[0]["old_id"] != warned[0]["new_id"]


@pytest.mark.parametrize("past", [False, True], ids=["short-of-the-old-position", "past-the-old-position"])
def test_a_source_topic_recreated_under_a_running_relay_is_relayed_from_its_beginning(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory, past: bool
) -> None:
    """A source topic deleted and recreated while the relay runs, the new topic fed short of or past the relay's
    old position before the relay reads it: the relay goes on without a gap or an exit, and relays every record
    of the new topic after the old ones, once, with every field."""
    topic, copy, port, feed, relay = _fed_relay(tmp_path, kafka_cluster, topic_factory)
    try:
        wait_for("the first records", lambda: _count(full(kafka_cluster, copy, 2)) >= 40, 60, relay)
        feed.pause()
        _caught_up(kafka_cluster, topic, copy, relay, 2)
        old = full(kafka_cluster, topic, 2)
        recreate_topic(kafka_cluster, topic, 2)
        if past:  # the new topic outgrows the old position at once: a reader there would skip its beginning
            fill = FeedProducer({**kafka_cluster.client_config(), "enable.idempotence": True, "linger.ms": 5})
            for i in range(2 * _count(old) + 40):
                key, value, headers, ts = varied(50_000 + i)  # keys of their own, stamped minutes ahead
                fill.send(topic, value, key, partition=i % 2, headers=headers, timestamp=ts)
            fill.flush_all(30)
        feed.resume()
        time.sleep(8)  # records flow into the new topic under the running relay
        feed.stop()
        new = full(kafka_cluster, topic, 2)
        want = {p: old[p] + new[p] for p in old}
        wait_for("every record", lambda: _count(full(kafka_cluster, copy, 2)) >= _count(want), 90, relay)
        assert relay.alive(), relay.log_tail()
        assert _metric(port, "kafka_lfs_relay_source_topic_recreated_total", topic=topic) == 1.0
    finally:
        assert relay.terminate() == 0, relay.log_tail()
    assert_copied(want, full(kafka_cluster, copy, 2))
    assert not events(relay, "the source's log was truncated below the relay's position"), relay.log_tail()
