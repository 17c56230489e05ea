"""Regression tests for what the chaos soak found (docs/reliability.md lists each with its seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_a_failover_to_a_trailing_standby_never_commits_a_record_twice_nor_a_position_back(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """East killed while the standby trailed by a few seconds of records: every record once, and the relay starts again.

    Reading west from west's end, below the relay's own position, and committing those records a
    second time with a position that moved back would leave a positions record no relay can read.
    The relay either waits for the standby or stops before committing (one line naming the
    partition); restarted, it goes on from its committed position.
    """
    east, west, target = cluster_factory("east"), cluster_factory("west"), cluster_factory("target")
    for cluster in (east, west):
        create_topic(cluster, TOPIC, 1)
    base, ahead, later = numbered(2_000, 1), numbered(1_000, 1, start=2_000), numbered(500, 1, start=3_000)
    produce([east, west], TOPIC, base)
    produce([east], TOPIC, ahead)  # west trails east by 1,000 records
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([east, west], target, [{"source": TOPIC}], source_pool={"min_dwell": "1h"}),
    )
    relay = RelayProcess(config).start()
    wait_for("east's records relayed", lambda: committed_count(target, TOPIC, 1) >= 3_000, 90, relay)
    east.kill()
    wait_for(
        "the switch to west",
        lambda: any(
            json.loads(line).get("event") == "switching source"
            for line in relay.log_text().splitlines()
            if line.startswith("{")
        ),
        60,
        relay,
    )
    produce([west], TOPIC, ahead + later)  # the standby catches up, and more arrives
    total = len(base) + len(ahead) + len(later)

    def settled() -> bool:
        if not relay.alive():
            assert relay.proc is not None and relay.proc.returncode == 1, relay.log_tail()
            assert "refusing to commit them twice" in relay.log_text(), relay.log_tail()
            relay.start()  # as a service manager would
        return committed_count(target, TOPIC, 1) >= total

    wait_for("every record relayed", settled, 180)
    assert relay.terminate() == 0, relay.log_tail()
    assert_same(records_by_partition(base + ahead + later, 1), read_all(target, TOPIC, 1))
    assert "cannot be read" not in relay.log_text()
    again = RelayProcess(config, "--stop-at-end").start()
    assert again.wait(120) == 0, again.log_tail()
    assert_same(records_by_partition(base + ahead + later, 1), read_all(target, TOPIC, 1))
