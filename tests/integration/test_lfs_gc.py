"""``kafka-lfs-relay lfs gc`` under a relay that keeps writing: only unreferenced objects past the grace period go."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay import cli
from kafka_lfs_relay.sandbox import KafkaCluster, S3Server
from lfs import decode_envelope, is_lfs_envelope
from targets.lfs.config import KeyTemplate
from tests.integration.harness import RelayProcess, wait_for
from tests.integration.lfs_harness import (
    count_target,
    lfs_config,
    list_keys,
    object_bytes,
    produce_sized,
    read_target,
    s3_section,
    topic_pair,
)

pytestmark = pytest.mark.integration

KIB = 1024
GRACE = 8  # seconds: longer than the 3 s transaction timeout, and than a gc run's read of Kafka under load
TEMPLATE = KeyTemplate("{prefix}/{relay}/{topic}/{partition}/{offset}-{sha256}")


def gc(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``lfs gc --json`` in this process: its exit code and report."""
    capsys.readouterr()
    code = cli.main(["lfs", "gc", "--config", str(config), "--json", *args])
    out, err = capsys.readouterr()
    assert out, f"lfs gc printed nothing (exit {code}): {err}"
    return code, json.loads(out)


def test_gc_deletes_orphans_and_expired_objects_only_while_the_relay_keeps_writing(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never an object a live envelope names, nor one younger than the grace period; orphans and expired ones go."""
    src, out = topic_pair(kafka_cluster, 2)
    prefix = f"gc-{uuid.uuid4().hex[:8]}"
    lfs = {"threshold": "256KiB", "upload_concurrency": 2, "s3": s3_section(s3_server, prefix)}
    config = lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, lfs, transaction_timeout="3s")
    name = yaml.safe_load(config.read_text())["name"]
    produce_sized(kafka_cluster, src, [(i % 2, (300 + 50 * i) * KIB) for i in range(16)], seed=3)
    relay = RelayProcess(config).start()
    client, bucket = s3_server.client(), s3_server.bucket
    try:
        wait_for("16 records relayed", lambda: count_target(kafka_cluster, out, 2) >= 16, 120, relay)

        def plant(topic: str, partition: int, offset: int) -> str:
            sha256 = hashlib.sha256(os.urandom(8)).hexdigest()
            key = TEMPLATE.render(prefix, topic, out, partition, offset, name, sha256)
            client.put_object(Bucket=bucket, Key=key, Body=os.urandom(1000))
            return key

        # An upload whose transaction aborted, its record later committed with other bytes; one of a record
        # not committed yet; one of a topic this config does not relay; and something that is no key of ours.
        orphan, in_flight, unmanaged = plant(src, 0, 3), plant(src, 0, 10**9), plant("other-topic", 0, 1)
        foreign = f"{prefix}/{name}/notes.txt"
        client.put_object(Bucket=bucket, Key=foreign, Body=b"x")
        # Retention removes partition 1's first four envelopes: their objects are expired.
        head = [r for r in read_target(kafka_cluster, out, 2)[1] if r.offset < 4]
        expired = {decode_envelope(r.value or b"").key for r in head}
        tp = TopicPartition(out, 1, 4)
        admin = AdminClient(kafka_cluster.client_conf())
        admin.delete_records([tp])[tp].result(30)
        time.sleep(GRACE + 0.5)  # everything so far is now older than the grace period
        young = plant(src, 0, 5)

        stop = threading.Event()

        def keep_writing() -> None:
            seed = 100
            while not stop.is_set():
                produce_sized(kafka_cluster, src, [(seed % 2, 400 * KIB)], seed=seed)
                seed += 1
                time.sleep(0.1)

        feeder = threading.Thread(target=keep_writing, daemon=True)
        feeder.start()
        try:
            code, dry = gc(capsys, config, "--grace", f"{GRACE}s")
            assert code == 0, dry
            assert dry["objects"]["orphan"] == 1 and dry["objects"]["expired"] == 4, dry
            assert dry["objects"]["young"] >= 1 and dry["objects"]["in_flight"] >= 1, dry
            assert (dry["objects"]["unmanaged"], dry["objects"]["foreign"]) == (1, 1), dry
            assert {orphan, *expired, young, in_flight, unmanaged, foreign} <= list_keys(client, bucket, prefix)

            metrics = tmp_path / "gc.prom"
            # Written again, so that it is still young when this run lists the bucket, however slow the dry run was.
            client.put_object(Bucket=bucket, Key=young, Body=os.urandom(1000))
            code, run = gc(capsys, config, "--grace", f"{GRACE}s", "--delete", "--metrics-file", str(metrics))
            assert code == 0 and run["deleted"] == {"objects": 5, "bytes": run["deletable"]["bytes"]}, run
        finally:
            stop.set()
            feeder.join(30)
        left = list_keys(client, bucket, prefix)
        assert not ({orphan} | expired) & left, "an orphan or an expired object survived --delete"
        assert {young, in_flight, unmanaged, foreign} <= left, "an object the rules protect was deleted"
        assert "kafka_lfs_relay_lfs_gc_deleted_objects 5.0" in metrics.read_text()
        assert relay.alive(), relay.log_tail()
    finally:
        assert relay.terminate() == 0, relay.log_tail()
    # Every envelope still in the log, those committed while gc ran included, names an object that is whole.
    records = [r for recs in read_target(kafka_cluster, out, 2).values() for r in recs]
    envelopes = [decode_envelope(r.value or b"") for r in records if is_lfs_envelope(r.value)]
    assert len(envelopes) == len(records) >= 16 - 4
    stored = list_keys(client, bucket, prefix)
    for env in envelopes:
        assert env.key in stored, f"gc deleted {env.key}, which a live envelope names"
        assert hashlib.sha256(object_bytes(client, bucket, env.key)).hexdigest() == env.sha256
