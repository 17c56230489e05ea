"""`kafka-lfs-relay sandbox up --detach` / `down` work end to end, as a user would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_lfs_relay.sandbox import FeedProducer
from kafka_lfs_relay.sandbox.process import pid_alive
from relay.logs import librdkafka_logger

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kafka_lfs_relay", *args], capture_output=True, text=True, timeout=240)


def test_detached_sandbox_serves_clients_and_down_leaves_no_process(tmp_path: Path) -> None:
    """Endpoints printed by `up --detach --json` work for Kafka and S3 clients, and `down` stops every process."""
    root = tmp_path / "sbx"
    up = _cli("sandbox", "up", "--clusters", "2", "--s3", "--detach", "--json", "--dir", str(root))
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    state = json.loads((root / "sandbox.json").read_text())
    pids = [c["pid"] for c in state["clusters"]] + [state["s3"]["pid"]]
    try:
        assert [c["name"] for c in info["clusters"]] == ["cluster-1", "cluster-2"]
        cluster = info["clusters"][1]
        conf = {"bootstrap.servers": cluster["bootstrap_servers"], **cluster["kafka"], "logger": librdkafka_logger()}
        admin = AdminClient(conf)
        admin.create_topics([NewTopic("cli-check", 1, 1)])["cli-check"].result(30)
        producer = FeedProducer(conf)
        producer.produce("cli-check", b"hello", b"k")
        producer.flush_all(30)
        consumer = Consumer({**conf, "group.id": "cli-check"})
        consumer.assign([TopicPartition("cli-check", 0, 0)])
        msgs = consumer.consume(1, timeout=30)
        consumer.close()
        assert [(m.key(), m.value()) for m in msgs] == [(b"k", b"hello")]

        s3 = info["s3"]
        client = boto3.client(
            "s3",
            endpoint_url=s3["endpoint_url"],
            region_name=s3["region"],
            aws_access_key_id=s3["access_key_id"],
            aws_secret_access_key=s3["secret_access_key"],
            config=Config(s3={"addressing_style": "path"}),
        )
        client.put_object(Bucket=s3["bucket"], Key="cli/check", Body=b"payload")
        assert client.get_object(Bucket=s3["bucket"], Key="cli/check")["Body"].read() == b"payload"
    finally:
        down = _cli("sandbox", "down", "--dir", str(root))
    assert down.returncode == 0, down.stderr
    assert [p for p in pids if pid_alive(p)] == []


def test_down_without_sandbox_is_one_clear_error(tmp_path: Path) -> None:
    """`sandbox down` on a folder with no sandbox says so in one line and exits non-zero."""
    down = _cli("sandbox", "down", "--dir", str(tmp_path))
    assert down.returncode == 1
    assert down.stderr.strip().splitlines() == [f"sandbox down: no sandbox is recorded in {tmp_path} (no sandbox.json)"]
