"""Admin clients for the application's own cluster work (group offsets, topic configs), one per cluster."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from relay.logs import librdkafka_logger
from relay.settings import ClusterConfig


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
