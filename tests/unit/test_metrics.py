"""RelayMetrics: the totals the relay logs when it stops."""

from __future__ import annotations

from relay.metrics import RelayMetrics


def test_relayed_sums_records_and_bytes_over_every_partition() -> None:
    """``relayed()`` is what the target committed, over every source cluster, topic and partition."""
    metrics = RelayMetrics()
    assert metrics.relayed() == (0, 0)
    for cluster, partition, n, size in (("east", "0", 3, 300), ("east", "1", 2, 50), ("west", "1", 1, 7)):
        metrics.records_relayed.labels(source_cluster=cluster, topic="t", partition=partition).inc(n)
        metrics.bytes_relayed.labels(source_cluster=cluster, topic="t", partition=partition).inc(size)
    assert metrics.relayed() == (6, 357)
