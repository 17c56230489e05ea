"""A producer for feeding sandbox topics that never counts a refused record as sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer

from kafka_lfs_relay.sandbox.process import SandboxError


class FeedProducer(Producer):
    """A :class:`confluent_kafka.Producer` that remembers every refused delivery.

    ``flush() == 0`` alone only says the queue is empty: a record whose delivery failed (timed
    out, refused by the broker) leaves the queue too. Tests, the benchmarks and the demo feed
    topics through this class so that such a record fails them instead of going missing.
    """

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.failures: list[str] = []
        super().__init__({**conf, "on_delivery": self._delivered})

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}/{msg.partition()}: {err.str()}")

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, **kwargs: Any) -> None:
        """``produce()``, waiting while the client's queue is full."""
        while True:
            try:
                self.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self.poll(0.05)

    def flush_all(self, timeout: float = 60) -> None:
        """Wait for every record; raise :class:`SandboxError` if one was not acknowledged or refused."""
        left = self.flush(timeout)
        if left:
            raise SandboxError(f"{left} records were not acknowledged by the sandbox cluster within {timeout:g} s")
        if self.failures:
            raise SandboxError(f"{len(self.failures)} records were refused, the first: {self.failures[0]}")
