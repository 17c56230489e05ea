"""Records go to the target as consumed and every guarantee holds: kill -9 mid-batch, failover, fencing.

Each test checks from the relay's start-up line that it took the path it tests (records as
consumed, or a Message per record with ``fast_path: false``), then compares the target with the
source record by record: key, value, headers and timestamp, in order, once.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka import Message as KafkaMessage

from kafka_lfs_relay.sandbox import KafkaCluster
from relay.message import SourcePartition
from relay.metrics import RelayMetrics
from relay.run import Run
from relay.settings import Backoff, ClusterConfig, TopicConfig
from targets import kafka
from targets.context import TargetContext
from targets.kafka import BatchConfig, KafkaTarget, KafkaTargetConfig
from tests.conftest import ClusterFactory, TopicFactory, create_topic
from tests.integration.harness import (
    RelayProcess,
    assert_same,
    committed_count,
    numbered,
    produce,
    read_all,
    records_by_partition,
    relay_config,
    wait_for,
    write_config,
)
from tests.readback import read_to_end

pytestmark = pytest.mark.integration

HEADERS = [("origin", b"fast-path-test"), ("trace", b"\x00\x01")]
PASSTHROUGH = "relay path: records as consumed"
PER_RECORD = "relay path: a Message per record"

Full = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int]


def _full(cluster: KafkaCluster, topic: str, partitions: int) -> dict[int, list[Full]]:
    """Every committed record per partition with its headers and timestamp."""
    found = read_to_end(cluster.client_config(), topic, partitions, batch=5000)
    return {
        p: [(m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]) for m in msgs] for p, msgs in found.items()
    }


def _assert_copied(
    source: KafkaCluster, target: KafkaCluster, topic: str, partitions: int, timestamps: bool = True
) -> None:
    """The target holds the source's records, each once, in order, with the same headers (and timestamps)."""
    want, have = _full(source, topic, partitions), _full(target, topic, partitions)
    if not timestamps:  # two sources fed separately stamp the same records a few ms apart
        want = {p: [(k, v, h, 0) for k, v, h, _ in recs] for p, recs in want.items()}
        have = {p: [(k, v, h, 0) for k, v, h, _ in recs] for p, recs in have.items()}
    assert_same(
        {p: [(k, v) for k, v, _, _ in recs] for p, recs in want.items()},
        {p: [(k, v) for k, v, _, _ in recs] for p, recs in have.items()},
    )
    for p in want:
        assert want[p] == have[p], f"partition {p}: headers or timestamps differ"


def _path(relay: RelayProcess) -> str:
    for line in relay.log_text().splitlines():
        if line.startswith("{") and "relay path" in line:
            return str(json.loads(line)["event"])
    raise AssertionError(f"the relay logged no path; log:\n{relay.log_tail()}")


@pytest.mark.parametrize("fast_path", [True, False], ids=["passthrough", "per-record"])
def test_kill9_mid_batch_then_restart_is_exactly_once(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory, fast_path: bool
) -> None:
    """SIGKILL at four random moments while records arrive, on either path: each record once, headers and
    timestamps kept."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=3)
    first, later = numbered(100_000, 3), numbered(100_000, 3, start=100_000)
    produce([source], topic, first, headers=HEADERS)
    feeder = threading.Thread(target=produce, args=([source], topic, later, HEADERS))
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [source], target, [{"source": topic}], target={"batch": {"max_records": 5000}}, fast_path=fast_path
        ),
    )
    relay = RelayProcess(config)
    rng = random.Random(20261201)
    feeder.start()
    for _ in range(4):
        relay.start()
        time.sleep(rng.uniform(1.5, 4.0))
        assert relay.alive(), relay.log_tail()
        relay.kill9()
    feeder.join()
    final = RelayProcess(config, "--stop-at-end")
    assert final.start().wait(300) == 0, final.log_tail()
    assert _path(final).startswith(PASSTHROUGH if fast_path else PER_RECORD)
    _assert_copied(source, target, topic, 3)


def test_failover_on_the_fast_path_relays_everything_once(tmp_path: Path, cluster_factory: ClusterFactory) -> None:
    """kill -9 of the active source mid-run: the fast path moves to the standby; every record arrives once."""
    east, west, target = cluster_factory("east"), cluster_factory("west"), cluster_factory("target")
    for cluster in (east, west):
        create_topic(cluster, "events", 3)
    first, later = numbered(120_000, 3), numbered(30_000, 3, start=120_000)
    produce([east, west], "events", first, headers=HEADERS)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([east, west], target, [{"source": "events"}], target={"batch": {"max_records": 2000}}),
    )
    relay = RelayProcess(config).start()
    wait_for("some records relayed", lambda: committed_count(target, "events", 3) > 5_000, 60, relay)
    assert _path(relay).startswith(PASSTHROUGH)
    east.kill()
    produce([west], "events", later, headers=HEADERS)
    total = len(first) + len(later)
    wait_for("every record relayed", lambda: committed_count(target, "events", 3) >= total, 180, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert "switching source" in relay.log_text()
    _assert_copied(west, target, "events", 3, timestamps=False)


def test_a_second_instance_fences_the_first_on_the_fast_path(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """A second relay with the same transactional.id fences the first mid-stream: no record twice."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=2)
    first_part, later = numbered(20_000, 2), numbered(120_000, 2, start=20_000)
    records = first_part + later
    produce([source], topic, first_part, headers=HEADERS)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([source], target, [{"source": topic}], target={"batch": {"max_records": 1000}}),
    )
    first = RelayProcess(config).start()
    wait_for("the first relay to write", lambda: committed_count(target, topic, 2) > 1_000, 60, first)
    second = RelayProcess(config)
    second.log_path = tmp_path / "second.log"
    second.start()
    feeder = threading.Thread(target=produce, args=([source], topic, later, HEADERS))
    feeder.start()
    feeder.join()
    wait_for("every record", lambda: committed_count(target, topic, 2) >= len(records), 180)
    codes = [p.terminate() if p.alive() else p.wait(1) for p in (first, second)]
    logs = first.log_text() + second.log_text()
    assert _path(first).startswith(PASSTHROUGH) and _path(second).startswith(PASSTHROUGH)
    assert "producer must be re-initialised" in logs, logs[-3000:]
    assert "Traceback" not in logs and "internal error" not in logs, logs[-3000:]
    assert all(code in (0, 1) for code in codes)
    assert_same(records_by_partition(records, 2), read_all(target, topic, 2))


def _group_target(cluster: KafkaCluster, topic: str) -> KafkaTarget:
    config = KafkaTargetConfig(
        cluster=ClusterConfig("target", cluster.bootstrap_servers),
        batch=BatchConfig(max_records=1000, linger=0.01),
        retry=Backoff(0.05, 0.5),
        transaction_timeout=30.0,
    )
    context = TargetContext("fast-fencing", (TopicConfig("orders", topic, "preserve"),), 256 << 20, group=True)
    return kafka.build(config, context, RelayMetrics())


def _raw(topic: str, offsets: range) -> list[Run]:
    recs = [
        KafkaMessage(topic="orders", partition=0, offset=o, key=f"k{o}".encode(), value=f"v{o}".encode())
        for o in offsets
    ]
    return [Run.consumed("src", SourcePartition("orders", 0), topic, recs)]


class _Acks:
    """Collects what a target acknowledges."""

    def __init__(self) -> None:
        self.runs: list[Run] = []

    def acked(self, runs: Sequence[Run]) -> None:
        self.runs.extend(runs)

    def failed(self) -> None:
        """Nothing waits here."""

    @property
    def count(self) -> int:
        return sum(len(run) for run in self.runs)


def test_group_mode_new_owner_fences_the_old_one_with_runs_as_consumed(
    kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Group mode, runs as consumed: once a new owner claims the partition, the old one's writes are refused and
    never acknowledged; the new owner resumes exactly after what the old one committed."""
    topic = topic_factory(kafka_cluster, partitions=1)
    sp = SourcePartition("orders", 0)
    old, new = _group_target(kafka_cluster, topic), _group_target(kafka_cluster, topic)
    acked_old, acked_new = _Acks(), _Acks()
    try:
        assert old.high_watermarks([sp]) == {}
        old.start(acked_old)
        old.write_runs(_raw(topic, range(0, 2500)), more=False)  # split into transactions of 1,000
        assert old.flush(30)
        assert acked_old.count == 2500
        assert new.high_watermarks([sp]) == {sp: 2500}
        new.start(acked_new)
        old.write_runs(_raw(topic, range(2500, 2600)), more=False)  # fenced: must never become visible
        old.flush(30)
        assert acked_old.count == 2500
        new.write_runs(_raw(topic, range(2500, 3000)), more=False)
        assert new.flush(30)
        assert acked_new.count == 500
    finally:
        old.close()
        new.close()
    values = [v for _, v in read_all(kafka_cluster, topic, 1)[0]]
    assert values == [f"v{o}".encode() for o in range(3000)]
