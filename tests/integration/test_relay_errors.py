"""User mistakes and refusals end the run with one clear line that names the thing, and lose nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster, relay_argv
from kafka_lfs_relay.sandbox.process import free_port
from tests.conftest import ClusterFactory, TopicFactory, create_topic
from tests.integration.harness import (
    RelayProcess,
    cluster_entry,
    committed_count,
    numbered,
    produce,
    relay_config,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def _error_line(relay: RelayProcess) -> str:
    """The one line the CLI prints to stderr at the end (the log lines before it are JSON)."""
    lines = [line for line in relay.log_text().splitlines() if line.startswith("kafka-lfs-relay: ")]
    assert len(lines) == 1, relay.log_tail()
    assert "Traceback" not in relay.log_text()
    return lines[0]


def _fails(tmp_path: Path, config: dict[str, object], timeout: float = 90) -> str:
    relay = RelayProcess(write_config(tmp_path / "relay.yml", config)).start()
    code = relay.wait(timeout)
    assert code != 0, relay.log_tail()
    return _error_line(relay)


def test_unreachable_source_is_named_and_waited_for(tmp_path: Path, kafka_cluster: KafkaCluster) -> None:
    """A source nobody listens on is not a mistake to stop on: the relay says once that it waits, naming
    that source, and a SIGTERM ends the wait with exit 0 and the same line."""
    config = relay_config([kafka_cluster], kafka_cluster, [{"source": "anything"}])
    config["sources"] = [{"name": "nowhere", "bootstrap_servers": f"127.0.0.1:{free_port()}"}]
    config["source_pool"] = {"request_timeout": "1s", "backoff": {"min": "100ms", "max": "500ms"}}
    relay = RelayProcess(write_config(tmp_path / "relay.yml", config)).start()
    wait_for("the relay to say it waits", lambda: "start-up waits" in relay.log_text(), 60, relay)
    time.sleep(2)  # several more attempts: still one line
    assert relay.terminate(30) == 0, relay.log_tail()
    assert relay.log_text().count("start-up waits") == 1, relay.log_tail()
    line = _error_line(relay)
    assert "stopped while start-up waited" in line and "no source cluster is usable" in line and "nowhere" in line


def test_unknown_source_topic_is_named(tmp_path: Path, kafka_cluster: KafkaCluster) -> None:
    """A source topic that does not exist ends the run with an error naming the topic and the cluster."""
    line = _fails(tmp_path, relay_config([kafka_cluster], kafka_cluster, [{"source": "no-such-topic"}]))
    assert "topic 'no-such-topic'" in line and "does not exist" in line and "shared" in line


def test_preserve_with_too_few_target_partitions_is_refused(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """partition: preserve into a target topic with fewer partitions, which the relay may not grow
    (create_topics: false), names both topics and both counts."""
    source = topic_factory(kafka_cluster, partitions=4)
    target = topic_factory(kafka_cluster, partitions=2)
    config = relay_config([kafka_cluster], kafka_cluster, [{"source": source, "target": target}])
    config["target"]["create_topics"] = False
    line = _fails(tmp_path, config)
    assert f"target topic {target!r}" in line and "at least 4 partitions" in line and "it has 2" in line


def test_record_over_the_target_limit_stops_the_relay_and_names_it(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """A record larger than the target topic's max.message.bytes stops the run naming its coordinates."""
    source = topic_factory(kafka_cluster, partitions=1)
    target = topic_factory(kafka_cluster, partitions=1, config={"max.message.bytes": "4000"})
    records = [*numbered(10, 1), (0, b"big", b"x" * 20_000), *numbered(10, 1, start=10)]
    produce([kafka_cluster], source, records)
    config = relay_config([kafka_cluster], kafka_cluster, [{"source": source, "target": target}], stop_at_end=True)
    config["target"]["kafka"] = {"compression.type": "none"}
    line = _fails(tmp_path, config)
    assert f"/{source}/0@10" in line and "too large" in line.lower()
    assert committed_count(kafka_cluster, target, 1) in (0, 10)


def test_wrong_source_password_is_named(tmp_path: Path, cluster_factory: ClusterFactory) -> None:
    """A wrong SASL password on the source ends the run with an authentication error naming the source."""
    secure = cluster_factory("secure", auth=True)
    create_topic(secure, "orders", 1)
    plain = cluster_factory()
    config = relay_config([secure], plain, [{"source": "orders"}])
    config["sources"][0]["kafka"]["sasl.password"] = "not-the-password"
    line = _fails(tmp_path, config)
    assert "secure" in line and "authentication" in line.lower()
    assert "not-the-password" not in (tmp_path / "relay.log").read_text()


def test_wrong_target_password_is_named(tmp_path: Path, cluster_factory: ClusterFactory) -> None:
    """A wrong SASL password on the target ends the run with an authentication error naming the target."""
    secure = cluster_factory("secure", auth=True)
    plain = cluster_factory()
    create_topic(plain, "orders", 1)
    config = relay_config([plain], secure, [{"source": "orders"}])
    config["target"]["kafka"]["sasl.password"] = "not-the-password"
    line = _fails(tmp_path, config)
    assert "target" in line and "authentication" in line.lower()
    assert "not-the-password" not in (tmp_path / "relay.log").read_text()


def test_config_errors_are_one_line_with_exit_code_2(tmp_path: Path, kafka_cluster: KafkaCluster) -> None:
    """A misspelled key is reported with its path and a suggestion, exit code 2, before connecting anywhere."""
    config = relay_config([kafka_cluster], kafka_cluster, [{"source": "x"}])
    config["target"]["batch"]["max_recrods"] = 10
    path = write_config(tmp_path / "relay.yml", config)
    proc = subprocess.run(
        relay_argv(path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kafka-lfs-relay: config key 'target.batch.max_recrods': unknown key; did you mean 'max_records'?"
    )


def test_check_reports_every_problem_and_exits_non_zero(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """`check` lists reachability and partition problems line by line and exits 1."""
    source = topic_factory(kafka_cluster, partitions=3)
    target = topic_factory(kafka_cluster, partitions=1)
    config = relay_config([kafka_cluster], kafka_cluster, [{"source": source, "target": target}, {"source": "nope"}])
    config["sources"].append({"name": "gone", "bootstrap_servers": f"127.0.0.1:{free_port()}"})
    config["mode"] = "failover"
    config["target"]["create_topics"] = False  # so too few target partitions are a problem, not grown
    path = write_config(tmp_path / "relay.yml", config)
    proc = subprocess.run(
        [sys.executable, "-m", "kafka_lfs_relay", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problems = [line for line in proc.stdout.splitlines() if line.startswith("PROBLEM")]
    assert any("source gone" in p and "not reachable" in p for p in problems), proc.stdout
    assert any("topic 'nope' does not exist" in p for p in problems), proc.stdout
    assert any(f"target topic {target!r} has 1 partitions" in p for p in problems), proc.stdout
    assert any("target topic 'nope' does not exist and target.create_topics is false" in p for p in problems)


def test_check_passes_on_a_good_config(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """`check` on a correct config prints ok lines and exits 0."""
    source = topic_factory(kafka_cluster, partitions=2)
    path = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": source, "target": source + "-c"}]),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kafka_lfs_relay", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("config OK")
    assert cluster_entry(kafka_cluster)["bootstrap_servers"] in proc.stdout
