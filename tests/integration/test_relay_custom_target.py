"""A custom target loaded by dotted path (the README's example) relays and resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster, relay_argv
from tests.conftest import TopicFactory
from tests.integration.harness import numbered, produce, relay_config, write_config

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(relay_argv(config), capture_output=True, text=True, timeout=120, env=env)


def test_jsonl_example_target_relays_and_resumes_once(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """The JSON-lines example target gets every record once over two runs, including after a torn last line."""
    topic = topic_factory(kafka_cluster, partitions=2)
    out = tmp_path / "out.jsonl"
    config = relay_config([kafka_cluster], kafka_cluster, [{"source": topic}], stop_at_end=True)
    config["target"] = {"type": "jsonl_target:JsonlTarget", "options": {"path": str(out), "flush_every": 100}}
    path = write_config(tmp_path / "relay.yml", config)
    produce([kafka_cluster], topic, numbered(1_000, 2))
    first = _run(path)
    assert first.returncode == 0, first.stderr
    with out.open("a") as fh:
        fh.write('{"topic": "torn')
    produce([kafka_cluster], topic, numbered(500, 2, start=1_000))
    second = _run(path)
    assert second.returncode == 0, second.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for partition in (0, 1):
        offsets = [line["offset"] for line in lines if line["partition"] == partition]
        assert offsets == list(range(750))
