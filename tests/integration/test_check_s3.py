"""`kafka-lfs-relay check` on lfs and hydrate targets: S3 buckets probed, claim bounds read, on the real servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster, relay_argv
from kafka_lfs_relay.sandbox.s3 import S3Server
from tests.conftest import TopicFactory
from tests.integration.hydrate_support import hydrate_relay
from tests.integration.lfs_harness import lfs_config, s3_section, topic_pair

pytestmark = pytest.mark.integration


def _check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafka_lfs_relay", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _aws_env(tmp_path: Path, credentials: str = "") -> dict[str, str]:
    """The environment without any AWS credentials but ``credentials`` (a shared credentials file's text).

    The instance metadata service is switched off: boto3's chain would otherwise try it last.
    """
    (tmp_path / "aws-credentials").write_text(credentials, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **env,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _no_keys(server: S3Server, **extra: Any) -> dict[str, Any]:
    s3 = s3_section(server, "creds", **extra)
    del s3["access_key_id"], s3["secret_access_key"]
    return s3


def test_without_credentials_check_says_so_and_run_stops_at_start_with_one_line(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """No credentials anywhere (IRSA misconfigured): check names it a permanent problem; run exits 1 at start."""
    src, out = topic_pair(kafka_cluster, 1)
    config = lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, {"s3": _no_keys(s3_server)})
    env = _aws_env(tmp_path)
    result = _check(config, env)
    assert result.returncode == 1, result.stdout + result.stderr
    (problem,) = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert f"S3 bucket {s3_server.bucket!r}" in problem and "no usable credentials (NoCredentialsError" in problem
    assert "permanent" in problem and "not reachable" not in problem

    run = subprocess.run(
        relay_argv(config),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    (line,) = [text for text in run.stderr.splitlines() if text.startswith("kafka-lfs-relay: ")]
    assert "no usable credentials" in line and "target.lfs.s3" in line, line
    assert "Traceback" not in run.stderr


def test_a_profile_of_the_shared_credentials_file_is_used(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """`profile: NAME` takes that profile's keys from the shared credentials file: check reaches the bucket."""
    info = s3_server.info()
    profile = (
        f"[relay]\naws_access_key_id = {info['access_key_id']}\naws_secret_access_key = {info['secret_access_key']}\n"
    )
    src, out = topic_pair(kafka_cluster, 1)
    config = lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, {"s3": _no_keys(s3_server, profile="relay")})
    result = _check(config, _aws_env(tmp_path, profile))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok      S3 bucket {s3_server.bucket!r}" in result.stdout


def test_check_accepts_a_reachable_bucket_with_good_credentials(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """With the sandbox's credentials, check reports the bucket reachable and exits 0."""
    src, out = topic_pair(kafka_cluster, 1)
    config = lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, {"s3": s3_section(s3_server, "check")})
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok      S3 bucket {s3_server.bucket!r}" in result.stdout


def test_check_names_the_bucket_when_the_secret_is_wrong_and_never_prints_it(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """A wrong secret key is one PROBLEM line naming the bucket and the section, without the secret; exit 1."""
    src, out = topic_pair(kafka_cluster, 1)
    wrong = "not-the-secret-0123456789"
    s3 = s3_section(s3_server, "check", secret_access_key=wrong)
    result = _check(lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, {"s3": s3}))
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1, result.stdout
    assert f"S3 bucket {s3_server.bucket!r}" in problems[0]
    assert "credentials were rejected" in problems[0] and "target.lfs.s3" in problems[0]
    assert wrong not in result.stdout + result.stderr


def test_check_reports_a_missing_bucket(tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server) -> None:
    """A bucket that does not exist is a PROBLEM line saying so; exit 1."""
    src, out = topic_pair(kafka_cluster, 1)
    s3 = s3_section(s3_server, "check", bucket="no-such-bucket-kfr")
    result = _check(lfs_config(tmp_path / "relay.yml", kafka_cluster, src, out, {"s3": s3}))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROBLEM S3 bucket 'no-such-bucket-kfr'" in result.stdout
    assert "the bucket does not exist" in result.stdout


def test_check_says_how_large_a_claim_a_hydrate_target_accepts(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """For a hydrate target, check prints each target topic's bound on claimed sizes and where it comes from."""
    source = topic_factory(kafka_cluster)
    target = topic_factory(kafka_cluster, config={"max.message.bytes": str(3 * 1024 * 1024)})
    relay = hydrate_relay(tmp_path, kafka_cluster, source, target, s3_server)
    result = _check(relay.config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = (
        f"ok      hydrate: envelopes for target topic {target!r} may claim at most {3 * 1024 * 1024 - 512} bytes "
        f"(target topic {target!r} has max.message.bytes={3 * 1024 * 1024})"
    )
    assert expected in result.stdout, result.stdout
