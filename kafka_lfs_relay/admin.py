"""Admin clients for the application's own cluster work (group offsets, topic configs), one per cluster."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.config import RelayConfig
from relay.discovery import listed_topics
from relay.logs import librdkafka_logger
from relay.settings import ClusterConfig, TopicConfig


class Admins:
    """One admin client per cluster, made on first use and kept."""

    def __init__(self) -> None:
        self._clients: dict[str, AdminClient] = {}

    def __call__(self, cluster: ClusterConfig) -> AdminClient:
        client = self._clients.get(cluster.name)
        if client is None:
            conf: dict[str, Any] = {**cluster.client_config(), "logger": librdkafka_logger()}
            client = self._clients[cluster.name] = AdminClient(conf)
        return client


def error_text(exc: BaseException) -> str:
    """A Kafka error's own text, or the exception's."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc) or type(exc).__name__


def selected_routes(config: RelayConfig, admins: Admins, timeout: float) -> list[TopicConfig]:
    """The routes ``config`` selects now: its explicit topics, and what its patterns match on the first
    source that lists its topics (the sources hold the same topics). Raises the last source's error
    when none answers."""
    selection = config.rules
    if not selection.dynamic:
        return list(config.topics)
    failure: BaseException | None = None
    for cluster in config.sources:
        try:
            ready, _ = listed_topics(admins(cluster).list_topics(timeout=timeout))
        except KafkaException as exc:
            failure = exc
            continue
        return list(selection.routes(ready).values())
    assert failure is not None
    raise failure
