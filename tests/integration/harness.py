"""Helpers for relay tests: run the real CLI as a process, feed topics, read them back, compare."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from kafka_lfs_relay import sandbox
from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster, cluster_entry
from tests.readback import read_to_end

Record = tuple[bytes | None, bytes | None]
ByPartition = dict[int, list[Record]]


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config`` as YAML to ``path``."""
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def relay_config(
    sources: list[KafkaCluster],
    dest: KafkaCluster,
    topics: list[dict[str, Any]],
    /,
    **extra: Any,
) -> dict[str, Any]:
    """A relay config with fast health checks, suitable for tests; ``extra`` sections are merged in."""
    config: dict[str, Any] = {
        "mode": "failover" if len(sources) > 1 else "single",
        "sources": [cluster_entry(c) for c in sources],
        "source_pool": {"healthcheck_interval": "500ms", "request_timeout": "1s", "min_dwell": "5s"},
        "topics": topics,
        "target": {**cluster_entry(dest, "target"), "batch": {"linger": "20ms"}},
        "log": {"level": "info", "format": "json"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
            if key == "target" and "batch" in value:
                config[key]["batch"] = {"linger": "20ms", **value["batch"]}
        else:
            config[key] = value
    return config


# Every relay process a test started, so that one a failed test left running is killed (see
# stop_leftover_relays): a relay outliving its test keeps writing and takes the next test's CPU.
_STARTED: list[RelayProcess] = []


def stop_leftover_relays() -> None:
    """Kill every relay process still running that a test started."""
    while _STARTED:
        relay = _STARTED.pop()
        if relay.alive():
            relay.kill9()


class RelayProcess(sandbox.RelayProcess):
    """``kafka-lfs-relay run`` as a child process, so it can be killed for real; a test fails on one that hangs."""

    def start(self, *args: str, config: Path | None = None) -> RelayProcess:
        """Start the relay (appending to its log file)."""
        super().start(*args, config=config)
        _STARTED.append(self)
        return self

    def wait(self, timeout: float) -> int:
        """Wait for the relay to exit; fail with its log if it does not."""
        code = super().wait(timeout)
        if code is None:
            self.kill9()
            raise AssertionError(f"relay did not exit within {timeout}s; log:\n{self.log_tail()}")
        return code


def produce(
    clusters: Iterable[KafkaCluster],
    topic: str,
    records: Iterable[tuple[int, bytes | None, bytes | None]],
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Send the same (partition, key, value) records, in the same order, to every cluster."""
    producers = [
        FeedProducer({**c.client_config(), "enable.idempotence": True, "linger.ms": 10, "compression.type": "lz4"})
        for c in clusters
    ]
    count = 0
    for partition, key, value in records:
        for producer in producers:
            producer.send(topic, value, key, partition=partition, headers=headers)
        count += 1
        if count % 5000 == 0:
            for producer in producers:
                producer.poll(0)
    for producer in producers:
        producer.flush_all(60)
    return count


def numbered(count: int, partitions: int, start: int = 0, size: int = 100) -> list[tuple[int, bytes, bytes]]:
    """``count`` records spread over ``partitions``, each value unique and ``size`` bytes long."""
    out = []
    for i in range(start, start + count):
        body = f"record-{i:09d}-".encode()
        out.append((i % partitions, f"key-{i}".encode(), body + b"x" * max(0, size - len(body))))
    return out


def read_all(
    cluster: KafkaCluster, topic: str, partitions: int, timeout: float = 120, committed: bool = True
) -> ByPartition:
    """Every committed record of ``topic`` per partition, in log order, read to the current end."""
    found = read_to_end(cluster.client_config(), topic, partitions, batch=5000, timeout=timeout, committed=committed)
    return {p: [(msg.key(), msg.value()) for msg in msgs] for p, msgs in found.items()}


def records_by_partition(records: Iterable[tuple[int, bytes | None, bytes | None]], partitions: int) -> ByPartition:
    """What ``numbered`` produced, grouped the way ``read_all`` returns it."""
    out: ByPartition = {p: [] for p in range(partitions)}
    for partition, key, value in records:
        out[partition].append((key, value))
    return out


def assert_same(expected: ByPartition, actual: ByPartition) -> None:
    """Exactly once, in order: per partition, the same records in the same order; names the first difference."""
    for partition in sorted(set(expected) | set(actual)):
        want, have = expected.get(partition, []), actual.get(partition, [])
        if want == have:
            continue
        seen: dict[Record, int] = {}
        for rec in have:
            seen[rec] = seen.get(rec, 0) + 1
        dups = sum(n - 1 for n in seen.values() if n > 1)
        missing = sum(1 for rec in want if rec not in seen)
        first = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), min(len(want), len(have)))
        raise AssertionError(
            f"partition {partition}: expected {len(want)} records, got {len(have)} "
            f"({missing} missing, {dups} duplicated); first difference at index {first}"
        )


def wait_for(what: str, check: Callable[[], bool], timeout: float, relay: RelayProcess | None = None) -> None:
    """Poll ``check`` until true; fail naming ``what`` (with the relay's log) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if relay is not None and not relay.alive():
            raise AssertionError(f"relay exited while waiting for {what}; log:\n{relay.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"; relay log:\n{relay.log_tail()}" if relay is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(0.25)


def end_offsets(cluster: KafkaCluster, topic: str, partitions: int) -> list[int]:
    """High watermarks of each partition."""
    consumer = Consumer({**cluster.client_conf(), "group.id": "test-offsets"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def committed_count(cluster: KafkaCluster, topic: str, partitions: int) -> int:
    """Number of committed records in ``topic`` (reads them all)."""
    return sum(len(v) for v in read_all(cluster, topic, partitions).values())
