"""Filters in a running relay: every built-in on real records, and exact resumption with filters on."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster, relay_argv
from tests.conftest import ClusterFactory, TopicFactory, create_topic
from tests.integration.harness import (
    RelayProcess,
    assert_same,
    committed_count,
    produce,
    read_all,
    relay_config,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Row = tuple[int, bytes, bytes, list[tuple[str, bytes]], int]


def _rows(count: int, partitions: int, start: int = 0) -> list[Row]:
    """Records with a region header, a JSON body and varied sizes: (partition, key, value, headers, index)."""
    rows = []
    for i in range(start, start + count):
        region = ("eu", "us", "apac")[i % 3]
        body = json.dumps({"order": {"id": i, "region": region}, "pad": "x" * (i % 7) * 100}).encode()
        rows.append((i % partitions, f"key-{i}".encode(), body, [("region", region.encode())], i))
    return rows


def _send(cluster: KafkaCluster, topic: str, rows: list[Row]) -> None:
    producer = FeedProducer({**cluster.client_config(), "enable.idempotence": True, "linger.ms": 5})
    for partition, key, value, headers, _ in rows:
        producer.produce(topic, value, key, partition=partition, headers=headers)
    producer.flush_all(30)


def _expected(rows: list[Row], keep: Callable[[Row], bool], partitions: int) -> dict[int, list[tuple[bytes, bytes]]]:
    out: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
    for row in rows:
        if keep(row):
            out[row[0]].append((row[1], row[2]))
    return out


BUILTINS: list[tuple[str, dict[str, Any], Callable[[Row], bool]]] = [
    ("header", {"header": "region", "equals": "eu"}, lambda r: r[3][0][1] == b"eu"),
    ("key", {"matches": "^key-[0-9]*7$"}, lambda r: r[1].endswith(b"7")),
    ("size", {"min": "300", "max": "700"}, lambda r: 300 <= len(r[2]) <= 700),
    ("json", {"field": "order.region", "matches": "^(us|apac)$"}, lambda r: b'"region": "eu"' not in r[2]),
    ("sample", {"fraction": 0.5}, lambda r: True),
]


@pytest.mark.parametrize(("kind", "config", "keep"), BUILTINS, ids=[b[0] for b in BUILTINS])
def test_builtin_filter_keeps_exactly_the_matching_records(
    tmp_path: Path,
    kafka_cluster: KafkaCluster,
    topic_factory: TopicFactory,
    kind: str,
    config: dict[str, Any],
    keep: Callable[[Row], bool],
) -> None:
    """A relay with one built-in filter writes exactly the records that filter keeps, in order."""
    topic = topic_factory(kafka_cluster, partitions=2)
    rows = _rows(3_000, 2)
    _send(kafka_cluster, topic, rows)
    out = f"{topic}-{kind}"
    cfg = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": topic, "target": out}],
        filters=[{"name": f"only-{kind}", "type": kind, "config": config}],
        stop_at_end=True,
    )
    relay = RelayProcess(write_config(tmp_path / "relay.yml", cfg)).start()
    assert relay.wait(120) == 0, relay.log_tail()
    got = read_all(kafka_cluster, out, 2)
    if kind == "sample":
        kept = {k for recs in got.values() for k, _ in recs}
        assert 1_200 < len(kept) < 1_800
        keep = lambda r: r[1] in kept  # noqa: E731 - the sample is checked for its size and for order below
    assert_same(_expected(rows, keep, 2), got)


def test_time_window_filter_uses_record_timestamps(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """`type: time` keeps the records whose timestamps fall in [from, to), and only those."""
    topic = topic_factory(kafka_cluster, partitions=1)
    producer = FeedProducer(kafka_cluster.client_config())
    # Recent timestamps: records from 2023 are past the topics' 7-day retention, and the broker's
    # periodic retention check could delete them (source or target) while the test runs.
    base = int(time.time() * 1000) - 200_000
    for i in range(100):
        producer.produce(topic, f"v{i}".encode(), f"k{i}".encode(), partition=0, timestamp=base + i * 1000)
    producer.flush_all(30)
    window = {"from": base + 10_000, "to": base + 20_000}
    cfg = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": topic, "target": f"{topic}-t"}],
        filters=[{"name": "window", "type": "time", "config": window}],
        stop_at_end=True,
    )
    relay = RelayProcess(write_config(tmp_path / "relay.yml", cfg)).start()
    assert relay.wait(120) == 0, relay.log_tail()
    assert read_all(kafka_cluster, f"{topic}-t", 1)[0] == [(f"k{i}".encode(), f"v{i}".encode()) for i in range(10, 20)]


def _header_filter() -> list[dict[str, Any]]:
    return [
        {"name": "not-us", "type": "header", "config": {"header": "region", "equals": "us"}, "on_error": "fail"},
        {"name": "small", "type": "size", "config": {"max": "600"}},
    ]


def _keep_not_us_small(row: Row) -> bool:
    return row[3][0][1] == b"us" and len(row[2]) <= 600


def test_filters_with_kill9_and_restart_are_exactly_once(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """With filters on, a relay killed three times writes each kept record once and no dropped record ever."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=3)
    rows = _rows(60_000, 3)
    _send(source, topic, rows)
    cfg = relay_config(
        [source], target, [{"source": topic}], filters=_header_filter(), target={"batch": {"max_records": 500}}
    )
    path = write_config(tmp_path / "relay.yml", cfg)
    relay = RelayProcess(path)
    rng = random.Random(4)
    for _ in range(3):
        relay.start()
        time.sleep(rng.uniform(1.5, 3.0))
        relay.kill9()
    final = RelayProcess(path, "--stop-at-end").start()
    assert final.wait(180) == 0, final.log_tail()
    assert_same(_expected(rows, _keep_not_us_small, 3), read_all(target, topic, 3))


def test_filters_in_failover_mode_survive_a_killed_source(tmp_path: Path, cluster_factory: ClusterFactory) -> None:
    """Filters in failover mode: the active source killed mid-run, every kept record once, no dropped record."""
    east, west, target = cluster_factory("east"), cluster_factory("west"), cluster_factory("target")
    for cluster in (east, west):
        create_topic(cluster, "orders", 2)
    rows, later = _rows(30_000, 2), _rows(10_000, 2, start=30_000)
    _send(east, "orders", rows)
    _send(west, "orders", rows)
    cfg = relay_config(
        [east, west], target, [{"source": "orders"}], filters=_header_filter(), target={"batch": {"max_records": 500}}
    )
    relay = RelayProcess(write_config(tmp_path / "relay.yml", cfg)).start()
    wait_for("some records relayed", lambda: committed_count(target, "orders", 2) > 500, 60, relay)
    east.kill()
    _send(west, "orders", later)
    expected = _expected(rows + later, _keep_not_us_small, 2)
    total = sum(len(v) for v in expected.values())
    wait_for("every kept record relayed", lambda: committed_count(target, "orders", 2) >= total, 120, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert "switching source" in relay.log_text()
    assert_same(expected, read_all(target, "orders", 2))


def test_filter_that_raises_stops_the_relay_naming_filter_and_record(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A filter exception stops the run with the filter's name and the record's coordinates, never its payload."""
    topic = topic_factory(kafka_cluster, partitions=1)
    produce([kafka_cluster], topic, [(0, b"k", b"not json but secret-payload")])
    cfg = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": topic, "target": f"{topic}-x"}],
        filters=[{"name": "strict-json", "type": "json", "config": {"field": "a", "equals": 1, "on_invalid": "error"}}],
        stop_at_end=True,
    )
    relay = RelayProcess(write_config(tmp_path / "relay.yml", cfg)).start()
    assert relay.wait(60) != 0
    lines = [line for line in relay.log_text().splitlines() if line.startswith("kafka-lfs-relay: ")]
    assert len(lines) == 1 and "strict-json" in lines[0] and f"/{topic}/0@0" in lines[0], relay.log_tail()
    assert "secret-payload" not in relay.log_text()


def test_installed_example_plugin_is_used_from_config(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """The pip-installed example plugin, named by its entry point in the config, filters a real relay run."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "examples" / "kfr-example-filter",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    topic = topic_factory(kafka_cluster, partitions=1)
    produce([kafka_cluster], topic, [(0, f"k{i}".encode(), f"v{i}".encode()) for i in range(20)])
    cfg = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": topic, "target": f"{topic}-even"}],
        filters=[{"name": "evens", "type": "example-even"}],
        stop_at_end=True,
    )
    env_path = os.pathsep.join([str(site), str(ROOT)])
    proc = subprocess.run(
        relay_argv(write_config(tmp_path / "r.yml", cfg)),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    assert proc.returncode == 0, proc.stderr
    got = read_all(kafka_cluster, f"{topic}-even", 1)[0]
    assert got == [(f"k{i}".encode(), f"v{i}".encode()) for i in range(0, 20, 2)]


def test_filter_metrics_count_kept_and_dropped(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """The metrics endpoint reports per-filter kept/dropped counts equal to what the target received."""
    from kafka_lfs_relay.sandbox.process import free_port

    topic = topic_factory(kafka_cluster, partitions=1)
    produce([kafka_cluster], topic, [(0, f"k{i}".encode(), f"v{i}".encode()) for i in range(1_000)])
    port = free_port()
    cfg = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": topic, "target": f"{topic}-m"}],
        filters=[{"name": "ends-in-3", "type": "key", "config": {"matches": "3$"}}],
        metrics={"listen": f"127.0.0.1:{port}"},
    )
    relay = RelayProcess(write_config(tmp_path / "relay.yml", cfg)).start()
    wait_for("100 records relayed", lambda: committed_count(kafka_cluster, f"{topic}-m", 1) >= 100, 60, relay)
    import urllib.request

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    wait_for(
        "metrics to settle",
        lambda: 'kafka_lfs_relay_filter_records_dropped_total{filter="ends-in-3"} 900.0' in scrape(),
        30,
        relay,
    )
    text = scrape()
    assert 'kafka_lfs_relay_filter_records_kept_total{filter="ends-in-3"} 100.0' in text
    assert (
        f'kafka_lfs_relay_records_relayed_total{{partition="0",source_cluster="shared",topic="{topic}"}} 100.0' in text
    )
    assert relay.terminate() == 0
