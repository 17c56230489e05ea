"""Periodic work runs on one instance: the owner of the lead partition, and moves with it."""

from __future__ import annotations

import threading
import time

from kafka_lfs_relay.background import Periodic, Task, lead_partition
from relay.message import SourcePartition


def test_the_lead_partition_is_partition_0_of_the_first_topic() -> None:
    """Whoever owns orders/0 (the first configured topic) does the periodic work."""
    assert lead_partition(["orders", "payments"], ["a-topic", "orders", "payments"]) == SourcePartition("orders", 0)


def test_with_patterns_alone_the_lead_is_partition_0_of_the_first_selected_topic_by_name() -> None:
    """No explicit topic: the first of the selected topics by name, and no lead while none is selected."""
    assert lead_partition([], ["payments", "orders"]) == SourcePartition("orders", 0)
    assert lead_partition([], []) is None


def test_tasks_run_only_while_this_instance_leads() -> None:
    """No run while not leading; a run at once on becoming the leader; none after losing the partition."""
    runs: list[float] = []
    leading = threading.Event()
    periodic = Periodic([Task("sync", 3600.0, lambda: runs.append(time.monotonic()))], leads=leading.is_set)
    periodic.start()
    try:
        time.sleep(1.3)
        assert runs == []
        leading.set()
        deadline = time.monotonic() + 5
        while not runs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(runs) == 1
        leading.clear()
        time.sleep(1.3)
        leading.set()  # leading again: the work is due at once, not an interval later
        deadline = time.monotonic() + 5
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(runs) == 2
    finally:
        periodic.stop()
