"""The offloading target under faults: the relay killed mid-upload, and S3 gone for 20 seconds."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster
from kafka_lfs_relay.sandbox.s3 import S3Server
from tests.integration.harness import RelayProcess, wait_for
from tests.integration.lfs_harness import (
    MIB,
    assert_mirrored,
    count_target,
    envelope_keys,
    free_port,
    incomplete_uploads,
    lfs_config,
    list_keys,
    metric,
    produce_sized,
    read_target,
    s3_section,
    scrape,
    topic_pair,
)

pytestmark = pytest.mark.integration

OFFLOADED = "kafka_lfs_relay_lfs_records_offloaded_total"
IN_FLIGHT = "kafka_lfs_relay_lfs_uploads_in_flight"


def test_kill9_mid_upload_then_restart_is_exactly_once_without_orphans(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """Killed with SIGKILL twice while uploads are in flight, the relay ends with each record once and no orphans."""
    src, out = topic_pair(kafka_cluster, 2)
    sizes = [100, 9 * MIB, 2 * MIB, 300, 17 * MIB, 6 * MIB, 12 * MIB, 100, 24 * MIB, 3 * MIB]
    plan = [(i % 2, sizes[i % len(sizes)]) for i in range(40)]
    sources = produce_sized(kafka_cluster, src, plan, seed=11)
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    port = free_port()
    lfs = {"upload_concurrency": 3, "part_size": "5MiB", "s3": s3_section(s3_server, prefix)}
    # A budget of about two of the largest records makes uploads and commits take turns: with the
    # default 256 MiB every upload started at once and the run was over before a kill could land.
    config = lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, lfs, metrics_port=port, max_in_flight="48MiB")
    client, bucket = s3_server.client(), s3_server.bucket
    leftovers: list[str] = []
    relay = RelayProcess(config)
    for kill_after in (4, 10):
        relay.start()

        def mid_upload(after: int = kill_after) -> bool:
            values = scrape(port)
            return metric(values, OFFLOADED) >= after and metric(values, IN_FLIGHT) >= 1

        wait_for(f"{kill_after} records offloaded and an upload in flight", mid_upload, 120, relay)
        relay.kill9()
        committed = envelope_keys(read_target(kafka_cluster, out, 2))
        uncommitted = list_keys(client, bucket, prefix) - committed
        leftovers += sorted(uncommitted) + incomplete_uploads(client, bucket, prefix)
    assert leftovers, "no kill left an uncommitted object or an incomplete upload: nothing was in flight"

    final = RelayProcess(config, "--stop-at-end")
    assert final.start().wait(240) == 0, final.log_tail()
    target = read_target(kafka_cluster, out, 2)
    keys = assert_mirrored(sources, target, client, bucket, threshold=MIB)
    assert list_keys(client, bucket, prefix) == keys, "orphan objects (no committed envelope names them)"
    assert incomplete_uploads(client, bucket, prefix) == [], "incomplete multipart uploads were left behind"


def test_s3_stopped_for_20_seconds_mid_run_loses_nothing(tmp_path: Path, kafka_cluster: KafkaCluster) -> None:
    """With S3 stopped for 20 s while records keep arriving, the relay pauses and then delivers every record once."""
    server = S3Server(tmp_path / "s3")
    server.start()
    try:
        src, out = topic_pair(kafka_cluster, 2)
        sizes = [100, 3 * MIB, 12 * MIB, 200, 2 * MIB, 9 * MIB]
        first = produce_sized(kafka_cluster, src, [(i % 2, sizes[i % 6]) for i in range(12)], seed=21)
        prefix = "outage"
        port = free_port()
        lfs = {"part_size": "5MiB", "s3": s3_section(server, prefix)}
        relay = RelayProcess(lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, lfs, metrics_port=port))
        relay.start()
        wait_for("the first records offloaded", lambda: metric(scrape(port), OFFLOADED) >= 2, 120, relay)
        server.stop()
        later = produce_sized(kafka_cluster, src, [(i % 2, sizes[i % 6]) for i in range(12)], seed=22)
        time.sleep(20)
        assert relay.alive(), relay.log_tail()
        stalled = metric(scrape(port), OFFLOADED)
        assert stalled <= 8, "records produced while S3 was down were offloaded before it came back"
        server.start()
        total = len(first) + len(later)
        wait_for("every record on the target", lambda: count_target(kafka_cluster, out, 2) >= total, 180, relay)
        assert relay.terminate() == 0, relay.log_tail()
        assert "S3 request failed; retrying" in relay.log_text(), "the relay never saw the outage"
        client = server.client()
        keys = assert_mirrored(first + later, read_target(kafka_cluster, out, 2), client, server.bucket, MIB)
        assert list_keys(client, server.bucket, prefix) == keys
    finally:
        server.kill()
