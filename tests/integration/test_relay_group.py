"""Group mode: instances share partitions through Kafka's group protocol, exactly once through churn."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ClusterFactory
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

PARTITIONS = 12
SESSION = 6.0


def _events(relay: RelayProcess) -> list[tuple[float, str, list[str]]]:
    """(time, event, partitions) of every assignment change the instance logged."""
    out = []
    for line in relay.log_text().splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec.get("event") in ("partitions assigned", "partitions revoked", "partitions lost"):
            ts = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            out.append((ts, rec["event"].split()[1], rec["partitions"]))
    return out


def _longest_unowned(instances: dict[str, RelayProcess], ended: dict[str, float], until: float) -> float:
    """The longest time any partition had no owner, from the instances' logs and when they died/froze."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for name, relay in instances.items():
        owned: dict[str, float] = {}
        for ts, kind, parts in _events(relay):
            for part in parts:
                if kind == "assigned":
                    owned[part] = ts
                elif part in owned:
                    spans.setdefault(part, []).append((owned.pop(part), ts))
        end = ended.get(name, until)
        for part, since in owned.items():
            spans.setdefault(part, []).append((since, end))
    worst = 0.0
    for intervals in spans.values():
        intervals.sort()
        covered_until = intervals[0][1]
        for start, stop in intervals[1:]:
            worst = max(worst, start - covered_until)
            covered_until = max(covered_until, stop)
    return worst


def test_instances_share_partitions_exactly_once_through_kill_join_and_pause(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """Three instances with kill -9, a new member and a member paused past its session: each record once."""
    from tests.conftest import create_topic

    source, target = cluster_factory("source"), cluster_factory("target")
    create_topic(source, "orders", PARTITIONS)
    records = numbered(240_000, PARTITIONS)
    config = relay_config([source], target, [{"source": "orders"}], target={"batch": {"max_records": 2000}})
    config["group"] = {"id": "orders-relay", "session_timeout": f"{SESSION:.0f}s"}

    def chunks() -> None:
        for i in range(0, len(records), 12_000):
            produce([source], "orders", records[i : i + 12_000])
            time.sleep(1.0)

    feeder = threading.Thread(target=chunks)
    feeder.start()
    instances = {name: RelayProcess(write_config(tmp_path / f"{name}.yml", config)).start() for name in ("a", "b", "c")}
    ended: dict[str, float] = {}
    try:
        wait_for("first records relayed", lambda: committed_count(target, "orders", PARTITIONS) > 10_000, 60)
        time.sleep(3)
        instances["a"].kill9()
        ended["a"] = time.time()
        time.sleep(4)
        instances["d"] = RelayProcess(write_config(tmp_path / "d.yml", config)).start()
        time.sleep(8)
        paused = instances["b"]
        assert paused.proc is not None
        paused.proc.send_signal(signal.SIGSTOP)
        ended["b"] = time.time()
        time.sleep(SESSION + 6)
        paused.proc.send_signal(signal.SIGCONT)
        feeder.join()
        wait_for(
            "every record relayed",
            lambda: committed_count(target, "orders", PARTITIONS) >= len(records),
            240,
        )
    finally:
        for name, relay in instances.items():
            if relay.alive():
                assert relay.terminate(90) == 0, f"{name}:\n{relay.log_tail()}"
        feeder.join()
    assert_same(records_by_partition(records, PARTITIONS), read_all(target, "orders", PARTITIONS))
    logs = "".join(r.log_text() for r in instances.values())
    assert "Traceback" not in logs
    # The paused member's partitions moved, and its writes for them were fenced or abandoned.
    assert "partitions lost" in instances["b"].log_text() or "fenced" in instances["b"].log_text()
    gap = _longest_unowned({k: v for k, v in instances.items()}, ended, time.time())
    assert gap < SESSION + 15, f"a partition had no owner for {gap:.1f}s"
