"""A target restart the relay learns of when the source has nothing more to give it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from relay.logs import librdkafka_logger
from tests.conftest import ClusterFactory, create_topic
from tests.integration.harness import RelayProcess, relay_config, wait_for, write_config
from tests.integration.hydrate_support import assert_records, produce_records, read_records, varied_records

pytestmark = pytest.mark.integration


def test_a_relay_fenced_on_the_last_records_the_source_had_relays_them_without_more_input(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """Fenced while committing the source's last records, the relay restarts its producer and relays them
    although the source gives it nothing more: every record once, with all its fields."""
    source, target = cluster_factory("source"), cluster_factory("target")
    topic = create_topic(source, f"idle-{uuid.uuid4().hex[:6]}", partitions=2)
    name = f"{topic}-relay"
    first, last = varied_records(1_000, 0, 2), varied_records(600, 1_000, 2)
    produce_records(source, topic, first)
    config = relay_config([source], target, [{"source": topic, "target": f"{topic}-copy"}], name=name)
    relay = RelayProcess(write_config(tmp_path / "relay.yml", config)).start()
    try:
        wait_for("the first records", lambda: len(read_records(target, f"{topic}-copy", 2)) == 1_000, 60, relay)
        # Another writer with the relay's transactional.id fences the relay's producer; the relay learns
        # of it at its next transaction, the one that carries the last records.
        zombie = Producer({**target.client_config(), "transactional.id": name, "logger": librdkafka_logger()})
        zombie.init_transactions(30)
        # One record batch per partition: the relay reads them in one poll, then the source is idle.
        produce_records(source, topic, last, **{"linger.ms": 1000})
        wait_for("every record", lambda: len(read_records(target, f"{topic}-copy", 2)) == 1_600, 60, relay)
        assert relay.terminate() == 0, relay.log_tail()
    finally:
        if relay.alive():
            relay.kill9()
    log = relay.log_text()
    assert "target producer must be re-initialised" in log, log[-3000:]
    assert "target restarted; re-reading positions from the target" in log, log[-3000:]
    assert_records(first + last, read_records(target, f"{topic}-copy", 2))
