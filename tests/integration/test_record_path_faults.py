"""The record path's three ways to lose or hang, each tried as an operator would meet it, on the sandbox.

* An overlapping deploy fences a relay whose filter drops most records: what it had read when it
  was fenced must not commit with its next transaction.
* SIGTERM while the relay waits for its byte budget: what it read and never wrote must not commit.
* An LFS backlog that meets a failure no retry can help: the relay stops, naming it, instead of
  waiting for acknowledgements that never come.

Records are compared with every field: key, value (null apart from empty), headers in order,
timestamp and partition.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster
from kafka_lfs_relay.sandbox.s3 import S3Server
from tests.conftest import ClusterFactory, TopicFactory
from tests.integration.harness import RelayProcess, end_offsets, relay_config, wait_for, write_config
from tests.integration.lfs_harness import MIB, count_target, payload, produce_sized, s3_section, topic_pair
from tests.readback import read_to_end

pytestmark = pytest.mark.integration

Headers = tuple[tuple[str, bytes | None], ...]
Full = tuple[int, bytes | None, bytes | None, Headers, int]
"""(partition, key, value, headers, timestamp): a record with every field a mirror must keep."""


def _record(i: int, partitions: int, base_ms: int, size: int = 60) -> Full:
    """The i-th record of a feed: null and empty values, duplicate and null headers, timestamps out of order."""
    key = f"k-{i:07d}".encode()
    value: bytes | None = f"v-{i}-".encode() + b"x" * size
    if i % 300 == 0:
        value = None
    elif i % 500 == 0:
        value = b""
    headers: Headers = (("h", b"1"), ("h", None), ("n", str(i).encode())) if i % 2 else ()
    return i % partitions, key, value, headers, base_ms + (i * 7919) % 1000


def _feed(
    cluster: KafkaCluster, topic: str, records: list[Full], rate: float, stop: threading.Event | None, sent: list[Full]
) -> None:
    """Produce ``records`` at about ``rate`` per second, until they run out or ``stop`` is set; ``sent`` gets them."""
    producer = FeedProducer({**cluster.client_config(), "enable.idempotence": True, "linger.ms": 5})
    started = time.monotonic()
    for n, record in enumerate(records):
        if stop is not None and stop.is_set():
            break
        partition, key, value, headers, ts = record
        producer.send(topic, value, key, partition=partition, headers=list(headers) or None, timestamp=ts)
        sent.append(record)
        ahead = n / rate - (time.monotonic() - started)
        if ahead > 0.01:
            producer.poll(0)
            time.sleep(ahead)
    producer.flush_all(60)
    assert not producer.failures, producer.failures[:3]


def _target(cluster: KafkaCluster, topic: str, partitions: int) -> list[Full]:
    """Every committed record of ``topic``, partition by partition, with every field."""
    found = read_to_end(cluster.client_config(), topic, partitions, batch=5000)
    return [
        (p, m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]) for p in range(partitions) for m in found[p]
    ]


def _assert_exact(expected: list[Full], actual: list[Full]) -> None:
    """The same records, each once, in order per partition; names what is missing or extra."""
    if expected == actual:
        return
    want, have = set(expected), set(actual)
    missing = sorted((r[0], r[1]) for r in want - have)
    extra = len(actual) - len(have) + len(have - want)
    raise AssertionError(
        f"expected {len(expected)} records, got {len(actual)}: {len(missing)} missing (first {missing[:3]}), "
        f"{extra} duplicated or foreign"
    )


def test_overlapping_deploys_of_a_filtering_relay_lose_nothing(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """Three times a second instance with the same config fences a relay whose filter keeps 1 record in 100,
    while records flow, and is killed once it has resumed: every kept record arrives once, with all fields."""
    source, target = topic_factory(kafka_cluster, partitions=2), f"out-{uuid.uuid4().hex[:8]}"
    base_ms = int(time.time() * 1000) - 60_000
    records = [_record(i, 2, base_ms) for i in range(600_000)]
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster],
            kafka_cluster,
            [{"source": source, "target": target}],
            name=f"overlap-{uuid.uuid4().hex[:6]}",
            filters=[{"name": "one-in-100", "type": "key", "config": {"matches": "00$"}}],
        ),
    )
    stop, sent = threading.Event(), []
    feeder = threading.Thread(target=_feed, args=(kafka_cluster, source, records, 3000.0, stop, sent))
    feeder.start()
    first = RelayProcess(config).start()
    rng = random.Random(2026_12_06)
    fenced = 0
    try:
        wait_for("the first relay to resume", lambda: "resuming" in first.log_text(), 60, first)  # its target exists
        # The end offsets, not a read: a reader never catches the end of a target written all the while.
        wait_for("the first relay to write", lambda: sum(end_offsets(kafka_cluster, target, 2)) > 20, 60, first)
        for n in range(3):
            second = RelayProcess(config)
            second.log_path = tmp_path / f"second-{n}.log"
            second.start()
            wait_for("the second instance to resume", lambda s=second: "resuming" in s.log_text(), 60, second)
            time.sleep(rng.uniform(0.3, 1.5))
            second.kill9()
            # The first relay, writing all the while, finds itself fenced, starts over and goes on.
            wait_for(
                "the first relay to be fenced", lambda n=n: first.log_text().count("must be re-initialised") > n, 60
            )
            fenced += 1
            time.sleep(rng.uniform(1.0, 2.0))
    finally:
        stop.set()
        feeder.join()
    code = first.terminate() if first.alive() else first.wait(1)
    assert code in (0, 1), first.log_tail()  # 1: it stopped after being fenced too often, and says so
    final = RelayProcess(config, "--stop-at-end")
    final.log_path = tmp_path / "final.log"
    assert final.start().wait(180) == 0, final.log_tail()
    kept = [r for r in sent if r[1] is not None and r[1].endswith(b"00")]
    assert fenced == 3 and len(kept) > 100
    _assert_exact(kept, _target(kafka_cluster, target, 2))


def test_sigterm_while_waiting_for_budget_commits_only_what_was_written(
    tmp_path: Path, kafka_cluster: KafkaCluster, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """SIGTERM while the relay waits for its byte budget (a backlog in one partition, the target paused, a second
    partition trickling), then the target is back for the drain: what was read and never written is read again;
    every record arrives once."""
    target_cluster = cluster_factory("target")
    source, target = topic_factory(kafka_cluster, partitions=2), f"out-{uuid.uuid4().hex[:8]}"
    base_ms = int(time.time() * 1000) - 60_000
    backlog = [(0, *rest) for _, *rest in (_record(i, 1, base_ms, size=65_536) for i in range(300))]
    trickle = [(1, *rest) for _, *rest in (_record(i, 1, base_ms) for i in range(20_000))]
    _feed(kafka_cluster, source, backlog, 1e9, None, [])
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster],
            target_cluster,
            [{"source": source, "target": target}],
            name=f"sigterm-{uuid.uuid4().hex[:6]}",
            max_in_flight="1MiB",
            target={"batch": {"max_bytes": "512KiB"}},
        ),
    )
    stop, sent = threading.Event(), []
    feeder = threading.Thread(target=_feed, args=(kafka_cluster, source, trickle, 100.0, stop, sent))
    feeder.start()
    relay = RelayProcess(config)
    try:
        for _ in range(3):
            relay.start()
            wait_for("the relay to resume", lambda: "resuming" in relay.log_text().rsplit("=== run", 1)[-1], 60, relay)
            time.sleep(1.0)
            target_cluster.pause()  # nothing is acknowledged: the budget fills and the relay waits for it
            time.sleep(2.0)
            assert relay.proc is not None
            relay.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            target_cluster.resume()  # back for the drain, which commits what the relay wrote, and only that
            assert relay.wait(90) == 0, relay.log_tail()
    finally:
        target_cluster.resume()
        stop.set()
        feeder.join()
    final = RelayProcess(config, "--stop-at-end")
    final.log_path = tmp_path / "final.log"
    assert final.start().wait(180) == 0, final.log_tail()
    assert len(sent) > 300
    _assert_exact(backlog + sent, _target(target_cluster, target, 2))


def test_an_lfs_backlog_meeting_a_permanent_failure_stops_the_relay_with_the_reason(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """60 records of 2 MiB under a 24 MiB budget, other bytes already at record 30's key: the relay stops with
    exit 1 naming bucket and key, instead of waiting for acknowledgements that never come."""
    src, out = topic_pair(kafka_cluster, 1)
    produce_sized(kafka_cluster, src, [(0, 2 * MIB)] * 60, seed=71)
    value = payload(71 * 1_000_003 + 30, 2 * MIB)
    client, bucket = s3_server.client(), s3_server.bucket
    prefix = f"backlog-{uuid.uuid4().hex[:8]}"
    name = f"relay-{prefix}"
    key = f"{prefix}/{name}/{src}/0/30-{hashlib.sha256(value).hexdigest()}"
    client.put_object(Bucket=bucket, Key=key, Body=b"squatter")
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [kafka_cluster],
            kafka_cluster,
            [{"source": src, "target": out}],
            name=name,
            max_in_flight="24MiB",
            target={
                "type": "lfs",
                "kafka": {"message.max.bytes": str(100 * MIB)},
                "batch": {"max_bytes": "4MiB"},
                "lfs": {"part_size": "5MiB", "s3": s3_section(s3_server, prefix)},
            },
        ),
    )
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 1, relay.log_tail()
    assert f"S3 object s3://{bucket}/{key} already holds other bytes" in relay.log_text(), relay.log_tail()
    assert count_target(kafka_cluster, out, 1) <= 30  # nothing at or after record 30 was committed
