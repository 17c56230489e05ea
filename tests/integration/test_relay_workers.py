"""``run --workers N``: N processes share the partitions in group mode; kill -9 of one loses and repeats nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

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

PARTITIONS = 6


def _lines(relay: RelayProcess) -> list[dict[str, Any]]:
    out = []
    for line in relay.log_text().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _worker_pids(relay: RelayProcess) -> list[int]:
    started = [line for line in _lines(relay) if line.get("event") == "workers started"]
    return [int(pid) for pid in started[-1]["pids"]] if started else []


def _owners(relay: RelayProcess) -> set[int]:
    """The workers that logged an assignment (in the log of the current run)."""
    text = relay.log_text().rsplit("=== run", 1)[-1]
    owners = set()
    for line in text.splitlines():
        if line.startswith("{") and '"partitions assigned"' in line:
            owners.add(int(json.loads(line)["worker"]))
    return owners


def test_two_workers_share_a_topic_and_kill9_of_one_is_exactly_once(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """run --workers 2: both workers own partitions; kill -9 of one stops the set with its code (137); run again,
    every record arrives exactly once."""
    source, target = cluster_factory("source"), cluster_factory("target")
    create_topic(source, "orders", PARTITIONS)
    first, later = numbered(60_000, PARTITIONS), numbered(90_000, PARTITIONS, start=60_000)
    records = first + later
    produce([source], "orders", first)
    config = relay_config([source], target, [{"source": "orders"}], target={"batch": {"max_records": 2000}})
    config["group"] = {"id": "orders-workers", "session_timeout": "6s"}
    path = write_config(tmp_path / "relay.yml", config)
    relay = RelayProcess(path, "--workers", "2").start()
    feeder = threading.Thread(target=produce, args=([source], "orders", later))
    feeder.start()
    try:
        wait_for("both workers to own partitions", lambda: _owners(relay) == {0, 1}, 90, relay)
        wait_for("records relayed", lambda: committed_count(target, "orders", PARTITIONS) > 20_000, 90, relay)
        assert relay.alive(), relay.log_tail()
        pids = _worker_pids(relay)
        assert len(pids) == 2, relay.log_tail()
        os.kill(pids[1], signal.SIGKILL)  # mid-batch: records keep arriving
        # The parent stops the other worker (it drains) and exits with the killed one's code.
        assert relay.wait(90) == 128 + signal.SIGKILL, relay.log_tail()
        assert "a worker exited; stopping the others" in relay.log_text()
        for pid in pids:
            wait_for(f"worker {pid} gone", lambda pid=pid: not Path(f"/proc/{pid}").exists(), 30)
        feeder.join()
        relay.start()
        wait_for("both workers to own partitions again", lambda: _owners(relay) == {0, 1}, 90, relay)
        wait_for(
            "every record relayed",
            lambda: committed_count(target, "orders", PARTITIONS) >= len(records),
            240,
            relay,
        )
        time.sleep(2)
        assert relay.terminate(90) == 0, relay.log_tail()
    finally:
        feeder.join()
        if relay.alive():
            relay.kill9()
        for pid in _worker_pids(relay):
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    assert_same(records_by_partition(records, PARTITIONS), read_all(target, "orders", PARTITIONS))
    logs = relay.log_text()
    assert "Traceback" not in logs and "internal error" not in logs
    assert "relay path: records as consumed" in logs
