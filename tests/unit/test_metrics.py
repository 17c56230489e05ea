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


def _sample(metrics: RelayMetrics, name: str) -> tuple[dict[str, str], float]:
    (found,) = [(s.labels, s.value) for m in metrics.registry.collect() for s in m.samples if s.name == name]
    return found


def test_build_info_names_this_version_and_the_client_versions() -> None:
    """kafka_lfs_relay_build_info is 1 with the relay's version (relay.__version__) and confluent-kafka's."""
    import confluent_kafka

    from relay import __version__

    labels, value = _sample(RelayMetrics(), "kafka_lfs_relay_build_info")
    assert value == 1.0
    assert labels["version"] == __version__
    assert labels["confluent_kafka"] == confluent_kafka.__version__
    assert labels["librdkafka"] == confluent_kafka.libversion()[0]


def test_ready_follows_readiness_at_scrape_time() -> None:
    """kafka_lfs_relay_ready is 0 while starting and 1 once /readyz would answer ready."""
    metrics = RelayMetrics()
    assert _sample(metrics, "kafka_lfs_relay_ready")[1] == 0.0
    metrics.health.running()
    assert metrics.health.readiness()[0]
    assert _sample(metrics, "kafka_lfs_relay_ready")[1] == 1.0
    metrics.health.draining()
    assert _sample(metrics, "kafka_lfs_relay_ready")[1] == 0.0


def test_the_process_collectors_are_in_the_relays_registry() -> None:
    """process_* (CPU, memory, file descriptors) and python_info are exported next to the relay's own."""
    names = {s.name for m in RelayMetrics().registry.collect() for s in m.samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"} <= names
