"""The librdkafka properties each client of the relay is built with, and that librdkafka takes them."""

from __future__ import annotations

from confluent_kafka import Consumer

from relay.logs import librdkafka_logger
from relay.settings import MIB, ClusterConfig, RelaySettings
from relay.sourcepool import reader_config
from targets.kafka.sender import producer_config

CLUSTER = ClusterConfig("east", "127.0.0.1:1", {"linger.ms": "50", "enable.idempotence": "false", "acks": "1"})


def test_a_huge_max_in_flight_still_makes_a_consumer_librdkafka_accepts() -> None:
    """The prefetch queue is capped at librdkafka's 2 GiB limit instead of refused (max_in_flight 16GiB once was)."""
    queue_bytes = RelaySettings((), max_in_flight=16 * 1024 * MIB).queue_bytes
    conf = reader_config(ClusterConfig("east", ""), queue_bytes)
    assert conf["queued.max.messages.kbytes"] == 2_097_151
    conf.pop("bootstrap.servers")
    Consumer({**conf, "logger": librdkafka_logger()}).close()


def test_the_producer_keeps_what_transactions_need_over_the_clusters_properties() -> None:
    """A cluster's properties override the relay's defaults, never idempotence, acks or the transactional id."""
    conf = producer_config(CLUSTER, "relay-1", 60.0)
    assert conf["linger.ms"] == "50"
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["transactional.id"] == "relay-1"
    assert conf["transaction.timeout.ms"] == 60_000
    assert conf["bootstrap.servers"] == "127.0.0.1:1"
