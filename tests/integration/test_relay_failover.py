"""Failover between identical source clusters: a dead, idle, paused or diverging source."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster
from tests.conftest import ClusterFactory, create_topic
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

pytestmark = pytest.mark.integration

TOPIC = "events"


def _switches(relay: RelayProcess) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in relay.log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "switching source"]


def _pair(cluster_factory: ClusterFactory, partitions: int) -> tuple[KafkaCluster, KafkaCluster, KafkaCluster]:
    east, west, target = cluster_factory("east"), cluster_factory("west"), cluster_factory("target")
    for cluster in (east, west):
        create_topic(cluster, TOPIC, partitions)
    return east, west, target


def test_killing_the_active_source_mid_run_switches_and_relays_everything_once(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """kill -9 of the active source while relaying: the relay moves to the standby; every record arrives once."""
    east, west, target = _pair(cluster_factory, 3)
    first, later = numbered(150_000, 3), numbered(30_000, 3, start=150_000)
    produce([east, west], TOPIC, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([east, west], target, [{"source": TOPIC}], target={"batch": {"max_records": 2000}}),
    )
    relay = RelayProcess(config).start()
    wait_for("some records relayed", lambda: committed_count(target, TOPIC, 3) > 5_000, 60, relay)
    east.kill()
    produce([west], TOPIC, later)
    total = len(first) + len(later)
    wait_for("every record relayed", lambda: committed_count(target, TOPIC, 3) >= total, 180, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert [(s["from_source"], s["to_source"], s["reason"]) for s in _switches(relay)] == [
        ("east", "west", "unreachable")
    ]
    assert_same(records_by_partition(first + later, 3), read_all(target, TOPIC, 3))


def test_failover_works_on_an_idle_topic(tmp_path: Path, cluster_factory: ClusterFactory) -> None:
    """A relay that is caught up and idle still notices its source died and relays what the standby gets next."""
    east, west, target = _pair(cluster_factory, 2)
    first, later = numbered(2_000, 2), numbered(1_000, 2, start=2_000)
    produce([east, west], TOPIC, first)
    config = write_config(tmp_path / "relay.yml", relay_config([east, west], target, [{"source": TOPIC}]))
    relay = RelayProcess(config).start()
    wait_for("the first records relayed", lambda: committed_count(target, TOPIC, 2) >= len(first), 60, relay)
    time.sleep(2)
    east.kill()
    wait_for("the switch to west", lambda: len(_switches(relay)) == 1, 30, relay)
    produce([west], TOPIC, later)
    wait_for("the new records relayed", lambda: committed_count(target, TOPIC, 2) >= 3_000, 60, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert_same(records_by_partition(first + later, 2), read_all(target, TOPIC, 2))


def test_a_paused_source_is_left_for_the_standby(tmp_path: Path, cluster_factory: ClusterFactory) -> None:
    """A SIGSTOPped source (a hung host) is detected by timeouts and the relay continues from the standby."""
    east, west, target = _pair(cluster_factory, 2)
    first, later = numbered(40_000, 2), numbered(10_000, 2, start=40_000)
    produce([east, west], TOPIC, first)
    config = write_config(tmp_path / "relay.yml", relay_config([east, west], target, [{"source": TOPIC}]))
    relay = RelayProcess(config).start()
    try:
        wait_for("some records relayed", lambda: committed_count(target, TOPIC, 2) > 1_000, 60, relay)
        east.pause()
        produce([west], TOPIC, later)
        total = len(first) + len(later)
        wait_for("every record relayed", lambda: committed_count(target, TOPIC, 2) >= total, 120, relay)
        assert relay.terminate() == 0, relay.log_tail()
    finally:
        east.resume()
    assert [s["to_source"] for s in _switches(relay)] == ["west"]
    assert_same(records_by_partition(first + later, 2), read_all(target, TOPIC, 2))


def test_a_lagging_source_is_left_for_one_that_is_ahead(tmp_path: Path, cluster_factory: ClusterFactory) -> None:
    """When the active source falls behind on one partition by more than lag_threshold, the relay switches."""
    east, west, target = _pair(cluster_factory, 2)
    base, extra = numbered(1_000, 2), numbered(4_000, 2, start=1_000)
    produce([east, west], TOPIC, base)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config(
            [east, west], target, [{"source": TOPIC}],
            source_pool={"lag_threshold": 500, "min_dwell": "1s"},
        ),
    )  # fmt: skip
    relay = RelayProcess(config).start()
    wait_for("the first records relayed", lambda: committed_count(target, TOPIC, 2) >= len(base), 60, relay)
    produce([west], TOPIC, extra)
    wait_for("the switch to west", lambda: len(_switches(relay)) == 1, 30, relay)
    produce([east], TOPIC, extra)
    wait_for("every record relayed", lambda: committed_count(target, TOPIC, 2) >= 5_000, 60, relay)
    assert relay.terminate() == 0, relay.log_tail()
    switch = _switches(relay)[0]
    assert (switch["to_source"], switch["reason"]) == ("west", "lagging")
    assert_same(records_by_partition(base + extra, 2), read_all(target, TOPIC, 2))


def test_sources_that_disagree_stop_the_relay_instead_of_failing_over(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """If the standby holds a different record at the relay's position, the relay stops with a clear error."""
    east, west, target = _pair(cluster_factory, 1)
    produce([east], TOPIC, numbered(1_000, 1))
    produce([west], TOPIC, numbered(1_000, 1, start=500_000))
    config = write_config(tmp_path / "relay.yml", relay_config([east, west], target, [{"source": TOPIC}]))
    relay = RelayProcess(config).start()
    wait_for("the first records relayed", lambda: committed_count(target, TOPIC, 1) >= 1_000, 60, relay)
    east.kill()
    assert relay.wait(60) != 0
    assert "hold different records at events/0@999" in relay.log_text()
    assert committed_count(target, TOPIC, 1) == 1_000
