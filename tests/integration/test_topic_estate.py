"""A topic estate: topics selected by pattern, renamed by template, discovered while running, never looped."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster
from kafka_lfs_relay.sandbox.distribution import KafkaDistribution
from tests.conftest import TopicFactory, _factory
from tests.integration.harness import RelayProcess, end_offsets, relay_config, wait_for, write_config
from tests.readback import read_to_end

HEADER = "kfr-provenance"
Full = tuple[bytes | None, bytes | None, list[tuple[str, bytes]], int]
"""One record as compared: key, value, headers in order, timestamp."""


@pytest.fixture(scope="module")
def other_cluster(tmp_path_factory: pytest.TempPathFactory, kafka_dist: KafkaDistribution) -> Iterator[KafkaCluster]:
    """A second cluster for the tests of this module that need two (failover, both directions)."""
    make, started = _factory(tmp_path_factory.mktemp("estate-kafka"), kafka_dist)
    yield make("other")
    for cluster in started:
        cluster.resume()
        cluster.stop(grace=10)


def full(msg: KafkaMessage) -> Full:
    """Every field of a consumed record that a relay must keep."""
    return msg.key(), msg.value(), list(msg.headers() or []), msg.timestamp()[1]


def records(cluster: KafkaCluster, topic: str, partitions: int) -> dict[int, list[Full]]:
    """Every committed record of ``topic`` per partition, all fields."""
    found = read_to_end(cluster.client_config(), topic, partitions, batch=5000, timeout=60)
    return {p: [full(m) for m in msgs] for p, msgs in found.items()}


def count(cluster: KafkaCluster, topic: str, partitions: int) -> int:
    """Committed records in ``topic`` (0 if it does not exist yet)."""
    if topic not in topics_of(cluster):
        return 0
    return sum(len(v) for v in records(cluster, topic, partitions).values())


def topics_of(cluster: KafkaCluster) -> set[str]:
    """The topic names of ``cluster``."""
    return set(AdminClient(cluster.client_conf()).list_topics(timeout=15).topics)


def feed(
    cluster: KafkaCluster, topic: str, partitions: int, n: int, tag: str, headers: bool = False, base: int = 0
) -> None:
    """``n`` records over ``partitions``: some with a null key, a null or empty value (never both: each names
    ``tag``), and (``headers``) headers; timestamps from ``base`` (0: a minute ago, which retention keeps)."""
    producer = FeedProducer({**cluster.client_config(), "enable.idempotence": True, "linger.ms": 5})
    base = base or int(time.time() * 1000) - 60_000
    for i in range(n):
        value = None if i % 11 == 5 else b"" if i % 13 == 6 else f"{tag}-v{i}-".encode() + b"x" * (i % 50)
        key = None if i % 7 == 3 and value else f"{tag}-k{i}".encode()
        kwargs: dict[str, Any] = {"partition": i % partitions, "timestamp": base + i}
        if headers and i % 2 == 0:
            kwargs["headers"] = [("h", f"{i}".encode()), ("h", None), ("z", b"")]
        producer.send(topic, value, key, **kwargs)
    producer.flush_all(60)


def assert_mirrored(source: KafkaCluster, topic: str, target: KafkaCluster, target_topic: str, partitions: int) -> None:
    """``target_topic`` holds ``topic``'s records exactly once, in order, partition by partition, every field equal."""
    want, have = records(source, topic, partitions), records(target, target_topic, partitions)
    for p in range(partitions):
        assert len(have[p]) == len(want[p]), f"{target_topic}/{p}: {len(have[p])} records, source has {len(want[p])}"
        for i, (a, b) in enumerate(zip(want[p], have[p], strict=True)):
            assert a == b, f"{target_topic}/{p} record {i} differs from {topic}/{p}"


def check_output(config: Path) -> str:
    """What ``kafka-lfs-relay check`` prints for ``config``."""
    done = subprocess.run(
        [sys.executable, "-m", "kafka_lfs_relay", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


def test_patterns_select_topics_and_templates_name_their_targets(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A pattern with an exclude and templates relay exactly the selected topics, renamed, every field kept."""
    uid = uuid.uuid4().hex[:6]
    eu = topic_factory(kafka_cluster, 2, name=f"est{uid}.orders.eu")
    us = topic_factory(kafka_cluster, 1, name=f"est{uid}.orders.us")
    test = topic_factory(kafka_cluster, 1, name=f"est{uid}.orders.test")
    billing = topic_factory(kafka_cluster, 1, name=f"est{uid}.billing")
    feed(kafka_cluster, eu, 2, 600, "eu", headers=True)
    feed(kafka_cluster, us, 1, 300, "us")
    feed(kafka_cluster, test, 1, 50, "test")
    feed(kafka_cluster, billing, 1, 200, "billing", headers=True)
    topics = [
        {"source_pattern": f"est{uid}\\.orders\\..*", "exclude": [".*\\.test"], "target": "dr-{topic}"},
        {"source": billing, "target": "{source}.{topic}"},
    ]
    raw = relay_config([kafka_cluster], kafka_cluster, topics, name=f"est-{uid}")
    raw["sources"][0]["name"] = "east"
    config = write_config(tmp_path / "relay.yml", raw)
    shown = check_output(config)
    assert f"selects 2: est{uid}.orders.eu -> dr-est{uid}.orders.eu, est{uid}.orders.us -> dr-est{uid}.orders.us" in (
        shown
    ), shown
    relay = RelayProcess(config, "--stop-at-end").start()
    assert relay.wait(120) == 0, relay.log_tail()
    assert_mirrored(kafka_cluster, eu, kafka_cluster, f"dr-{eu}", 2)
    assert_mirrored(kafka_cluster, us, kafka_cluster, f"dr-{us}", 1)
    assert_mirrored(kafka_cluster, billing, kafka_cluster, f"east.{billing}", 1)
    assert f"dr-{test}" not in topics_of(kafka_cluster)


class Feeder:
    """Produces numbered records to a topic on a thread until stopped, like a live application."""

    def __init__(self, cluster: KafkaCluster, topic: str, partitions: int) -> None:
        self._producer = FeedProducer({**cluster.client_config(), "enable.idempotence": True, "linger.ms": 5})
        self._topic, self._partitions = topic, partitions
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(40):
                i = self.sent
                self._producer.send(self._topic, f"live-{i}".encode(), f"k{i}".encode(), partition=i % self._partitions)
                self.sent += 1
            self._producer.poll(0)
            time.sleep(0.05)

    def stop(self) -> int:
        """Stop, flush, and say how many records were sent."""
        self._stop.set()
        self._thread.join(10)
        self._producer.flush_all(60)
        return self.sent


def test_topics_created_and_deleted_while_records_flow_then_kill9_are_relayed_exactly_once(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Topics created while running, while the relay is down, and deleted, with kill -9 mid-way: each once."""
    uid = uuid.uuid4().hex[:6]
    live = topic_factory(kafka_cluster, 2, name=f"disc{uid}.live")
    doomed = topic_factory(kafka_cluster, 1, name=f"disc{uid}.doomed")
    feed(kafka_cluster, doomed, 1, 200, "doomed")
    topics = [{"source_pattern": f"disc{uid}\\..*", "target": "m-{topic}"}]
    raw = relay_config([kafka_cluster], kafka_cluster, topics, name=f"disc-{uid}", topic_refresh="1s")
    config = write_config(tmp_path / "relay.yml", raw)
    feeder = Feeder(kafka_cluster, live, 2)
    relay = RelayProcess(config).start()
    mirror = f"m-{live}"
    wait_for(
        "the first live records",
        lambda: mirror in topics_of(kafka_cluster) and sum(end_offsets(kafka_cluster, mirror, 2)) > 100,
        60,
        relay,
    )
    born = topic_factory(kafka_cluster, 3, name=f"disc{uid}.born")
    feed(kafka_cluster, born, 3, 300, "born", headers=True)
    wait_for("the topic created while running", lambda: count(kafka_cluster, f"m-{born}", 3) == 300, 60, relay)
    wait_for("the doomed topic", lambda: count(kafka_cluster, f"m-{doomed}", 1) == 200, 60, relay)
    relayed_doomed = records(kafka_cluster, f"m-{doomed}", 1)
    admin = AdminClient(kafka_cluster.client_conf())
    admin.delete_topics([doomed])[doomed].result(30)
    wait_for("the deletion to be noticed", lambda: "topic no longer on the source" in relay.log_text(), 30, relay)
    feed(kafka_cluster, born, 3, 150, "born-more")
    relay.kill9()
    late = topic_factory(kafka_cluster, 1, name=f"disc{uid}.late")
    feed(kafka_cluster, late, 1, 120, "late")
    relay.start()
    sent = feeder.stop()
    wait_for("everything", lambda: count(kafka_cluster, f"m-{live}", 2) >= sent, 90, relay)
    wait_for("the late topic", lambda: count(kafka_cluster, f"m-{late}", 1) == 120, 60, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert_mirrored(kafka_cluster, live, kafka_cluster, f"m-{live}", 2)
    assert_mirrored(kafka_cluster, born, kafka_cluster, f"m-{born}", 3)
    assert_mirrored(kafka_cluster, late, kafka_cluster, f"m-{late}", 1)
    assert records(kafka_cluster, f"m-{doomed}", 1) == relayed_doomed
    assert sum(len(v) for v in relayed_doomed.values()) == 200


def test_a_topic_created_while_workers_run_is_relayed_exactly_once(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Group mode (--workers 2): a matching topic created while running is shared by the workers, once."""
    uid = uuid.uuid4().hex[:6]
    first = topic_factory(kafka_cluster, 4, name=f"grp{uid}.first")
    feed(kafka_cluster, first, 4, 400, "first")
    topics = [{"source_pattern": f"grp{uid}\\..*", "target": "g-{topic}"}]
    raw = relay_config([kafka_cluster], kafka_cluster, topics, name=f"grp-{uid}", topic_refresh="1s")
    raw["group"] = {"id": f"grp-{uid}", "session_timeout": "6s"}
    config = write_config(tmp_path / "relay.yml", raw)
    relay = RelayProcess(config, "--workers", "2").start()
    wait_for("the first topic", lambda: count(kafka_cluster, f"g-{first}", 4) == 400, 90, relay)
    second = topic_factory(kafka_cluster, 4, name=f"grp{uid}.second")
    feed(kafka_cluster, second, 4, 400, "second", headers=True)
    wait_for("the topic created while running", lambda: count(kafka_cluster, f"g-{second}", 4) == 400, 90, relay)
    feed(kafka_cluster, first, 4, 100, "first-more")
    wait_for("the last records", lambda: count(kafka_cluster, f"g-{first}", 4) == 500, 60, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert_mirrored(kafka_cluster, first, kafka_cluster, f"g-{first}", 4)
    assert_mirrored(kafka_cluster, second, kafka_cluster, f"g-{second}", 4)


def test_a_topic_created_after_a_failover_is_found_on_the_new_source(
    tmp_path: Path, kafka_cluster: KafkaCluster, other_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Failover mode: discovery follows the active source; a topic created after the switch is relayed once."""
    uid = uuid.uuid4().hex[:6]
    both = [other_cluster, kafka_cluster]
    first = f"fo{uid}.first"
    base = int(time.time() * 1000) - 60_000
    for cluster in both:
        topic_factory(cluster, 2, name=first)
        feed(cluster, first, 2, 300, "first", base=base)
    topics = [{"source_pattern": f"fo{uid}\\..*", "target": "f-{topic}"}]
    raw = relay_config(both, kafka_cluster, topics, name=f"fo-{uid}", topic_refresh="1s")
    config = write_config(tmp_path / "relay.yml", raw)
    relay = RelayProcess(config).start()
    wait_for("the first topic", lambda: count(kafka_cluster, f"f-{first}", 2) == 300, 60, relay)
    other_cluster.pause()
    try:
        wait_for("the switch", lambda: "switching source" in relay.log_text(), 60, relay)
        second = f"fo{uid}.second"
        topic_factory(kafka_cluster, 2, name=second)
        feed(kafka_cluster, second, 2, 250, "second", headers=True)
        wait_for("the topic created after the switch", lambda: count(kafka_cluster, f"f-{second}", 2) == 250, 60, relay)
    finally:
        other_cluster.resume()
    assert relay.terminate() == 0, relay.log_tail()
    assert_mirrored(kafka_cluster, first, kafka_cluster, f"f-{first}", 2)
    assert_mirrored(kafka_cluster, second, kafka_cluster, f"f-{second}", 2)


def _by_origin(found: dict[int, list[Full]], tag: bytes) -> dict[int, list[Full]]:
    """The records whose key or value starts with ``tag`` (nulls go by value, then key), per partition."""

    def origin(rec: Full) -> bytes:
        return (rec[0] or b"") + (rec[1] or b"")

    return {p: [r for r in recs if tag in origin(r)] for p, recs in found.items()}


def _stamped(found: dict[int, list[Full]], cluster_id: str) -> dict[int, list[Full]]:
    """``found`` as a relay writes it with provenance: each record's headers followed by the source's id."""
    return {p: [(k, v, [*h, (HEADER, cluster_id.encode())], ts) for k, v, h, ts in recs] for p, recs in found.items()}


def _cluster_id(cluster: KafkaCluster) -> str:
    return str(AdminClient(cluster.client_conf()).list_topics(timeout=15).cluster_id)


def _both_ways(
    tmp_path: Path,
    x: KafkaCluster,
    y: KafkaCluster,
    uid: str,
    topics: list[dict[str, Any]],
    label: str,
    shared: bool = False,
) -> tuple[RelayProcess, RelayProcess]:
    """Relays x -> y (named x/y) and y -> x (named y/x), with provenance, started; ``shared``: into topics
    local producers write too."""
    relays = []
    for source, sname, target, tname in ((x, "x", y, "y"), (y, "y", x, "x")):
        raw = relay_config([source], target, topics, name=f"{label}-{sname}{tname}-{uid}", topic_refresh="1s")
        raw["sources"][0]["name"] = sname
        raw["target"]["name"] = tname
        raw["provenance"] = {"enabled": True}
        if shared:  # local producers write the same topics: the target holds records no relay wrote
            raw["target"]["on_existing_data"] = "append"
        config = write_config(tmp_path / f"{label}-{sname}{tname}.yml", raw)
        relays.append(RelayProcess(config).start())
    return relays[0], relays[1]


def test_two_relays_mirroring_both_ways_under_identity_names_copy_every_record_once(
    tmp_path: Path, kafka_cluster: KafkaCluster, other_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Active-active, same topic name both ways: provenance stops every loop; each record exists once per side."""
    uid = uuid.uuid4().hex[:6]
    x, y, topic = kafka_cluster, other_cluster, f"aa{uid}.orders"
    for cluster in (x, y):
        topic_factory(cluster, 2, name=topic)
    feed(x, topic, 2, 300, f"X{uid}", headers=True)
    feed(y, topic, 2, 200, f"Y{uid}")
    own_x, own_y = records(x, topic, 2), records(y, topic, 2)
    xy, yx = _both_ways(tmp_path, x, y, uid, [{"source": topic}], "id", shared=True)
    try:
        wait_for("both sides complete", lambda: count(x, topic, 2) >= 500 and count(y, topic, 2) >= 500, 90, xy)
        time.sleep(4)  # a loop would keep growing both sides
        assert xy.terminate() == 0, xy.log_tail()
        assert yx.terminate() == 0, yx.log_tail()
    finally:
        for relay in (xy, yx):
            if relay.alive():
                relay.kill9()
    on_x, on_y = records(x, topic, 2), records(y, topic, 2)
    assert _by_origin(on_x, f"X{uid}".encode()) == own_x
    assert _by_origin(on_x, f"Y{uid}".encode()) == _stamped(own_y, _cluster_id(y))
    assert _by_origin(on_y, f"Y{uid}".encode()) == own_y
    assert _by_origin(on_y, f"X{uid}".encode()) == _stamped(own_x, _cluster_id(x))
    assert sum(map(len, on_x.values())) == sum(map(len, on_y.values())) == 500


def test_two_relays_mirroring_both_ways_under_a_prefix_rule_never_mirror_a_copy_back(
    tmp_path: Path, kafka_cluster: KafkaCluster, other_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Active-active under "{source}.{topic}" with a pattern: each side holds its own and the other's, once."""
    uid = uuid.uuid4().hex[:6]
    x, y, topic = kafka_cluster, other_cluster, f"pf{uid}.orders"
    for cluster in (x, y):
        topic_factory(cluster, 2, name=topic)
    feed(x, topic, 2, 250, f"X{uid}")
    feed(y, topic, 2, 150, f"Y{uid}", headers=True)
    rule = [{"source_pattern": f"(.*\\.)?pf{uid}\\.orders", "target": "{source}.{topic}"}]
    xy, yx = _both_ways(tmp_path, x, y, uid, rule, "pf")
    try:
        wait_for("x's copy on y", lambda: count(y, f"x.{topic}", 2) == 250, 90, xy)
        wait_for("y's copy on x", lambda: count(x, f"y.{topic}", 2) == 150, 90, yx)
        time.sleep(4)  # several refreshes: a copy mirrored back would show up as a topic by now
        assert xy.terminate() == 0, xy.log_tail()
        assert yx.terminate() == 0, yx.log_tail()
    finally:
        for relay in (xy, yx):
            if relay.alive():
                relay.kill9()
    assert {t for t in topics_of(x) if uid in t and "positions" not in t} == {topic, f"y.{topic}"}
    assert {t for t in topics_of(y) if uid in t and "positions" not in t} == {topic, f"x.{topic}"}
    assert records(y, f"x.{topic}", 2) == _stamped(records(x, topic, 2), _cluster_id(x))
    assert records(x, f"y.{topic}", 2) == _stamped(records(y, topic, 2), _cluster_id(y))
