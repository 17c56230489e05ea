"""kill -9 of the relay, and a target cluster that goes away: still exactly once."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ClusterFactory, TopicFactory
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


def test_kill9_at_five_random_moments_then_restart_is_exactly_once(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """The relay killed with SIGKILL five times while records keep arriving delivers each record exactly once."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=3)
    first, later = numbered(150_000, 3), numbered(150_000, 3, start=150_000)
    produce([source], topic, first)
    feeder = threading.Thread(target=produce, args=([source], topic, later))
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([source], target, [{"source": topic}], target={"batch": {"max_records": 5000}}),
    )
    relay = RelayProcess(config)
    rng = random.Random(20261122)
    feeder.start()
    for _ in range(5):
        relay.start()
        time.sleep(rng.uniform(1.5, 4.0))
        assert relay.alive(), relay.log_tail()
        relay.kill9()
    feeder.join()
    final = RelayProcess(config, "--stop-at-end")
    assert final.start().wait(300) == 0, final.log_tail()
    assert_same(records_by_partition(first + later, 3), read_all(target, topic, 3))


def test_target_cluster_stopped_and_restarted_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """Stopping the target cluster while records flow pauses the relay; afterwards every record is there once."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=2)
    first, later = numbered(20_000, 2), numbered(60_000, 2, start=20_000)
    produce([source], topic, first)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([source], target, [{"source": topic}], target={"batch": {"max_records": 2000}}),
    )
    relay = RelayProcess(config).start()
    wait_for("the first records on the target", lambda: committed_count(target, topic, 2) >= len(first), 60, relay)
    target.stop()
    produce([source], topic, later)
    time.sleep(5)
    assert relay.alive(), relay.log_tail()
    target.start()
    total = len(first) + len(later)
    wait_for("every record on the target", lambda: committed_count(target, topic, 2) >= total, 180, relay)
    assert relay.terminate() == 0, relay.log_tail()
    assert "not confirmed the batch yet" in relay.log_text(), "the relay never waited for the target: no outage seen"
    assert_same(records_by_partition(first + later, 2), read_all(target, topic, 2))


def test_two_relays_with_one_transactional_id_fence_each_other_without_duplicates(
    tmp_path: Path, cluster_factory: ClusterFactory, topic_factory: TopicFactory
) -> None:
    """A second relay started by mistake with one config fences the first; the target holds each record once."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = topic_factory(source, partitions=2)
    first_part, later = numbered(20_000, 2), numbered(150_000, 2, start=20_000)
    records = first_part + later
    produce([source], topic, first_part)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([source], target, [{"source": topic}], target={"batch": {"max_records": 1000}}),
    )
    first = RelayProcess(config).start()
    wait_for("the first relay to write", lambda: committed_count(target, topic, 2) > 1_000, 60, first)
    second = RelayProcess(config)
    second.log_path = tmp_path / "second.log"
    second.start()
    feeder = threading.Thread(target=produce, args=([source], topic, later))
    feeder.start()
    feeder.join()
    wait_for("every record", lambda: committed_count(target, topic, 2) >= len(records), 180)
    codes = [p.terminate() if p.alive() else p.wait(1) for p in (first, second)]
    logs = first.log_text() + second.log_text()
    assert "producer must be re-initialised" in logs, logs[-3000:]
    assert "Traceback" not in logs and "internal error" not in logs, logs[-3000:]
    assert all(code in (0, 1) for code in codes)
    assert_same(records_by_partition(records, 2), read_all(target, topic, 2))
