"""A producer for feeding sandbox topics that never counts a refused record as sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer

from kafka_lfs_relay.sandbox.process import SandboxError
from relay.logs import librdkafka_logger


class FeedProducer(Producer):
    """A :class:`confluent_kafka.Producer` that remembers every refused delivery.

    ``flush() == 0`` alone only says the queue is empty: a record whose delivery failed (timed
    out, refused by the broker) leaves the queue too. Tests, the benchmarks and the demo feed
    topics through this class so that such a record fails them instead of going missing.

    librdkafka's lines go through structlog (:func:`relay.logs.librdkafka_logger`) unless
    ``conf`` names another ``logger``. The producer holds no reference to itself (its delivery
    callback is a closure over :attr:`failures`, not a bound method), so dropping the last
    reference destroys it at once: a feeder that is done does not linger, reconnecting to a
    cluster that a test or the demo kills afterwards, until the next garbage collection.
    """

    def __init__(self, conf: Mapping[str, Any]) -> None:
        failures: list[str] = []

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failures.append(f"{msg.topic()}/{msg.partition()}: {err.str()}")

        self.failures = failures
        super().__init__({"logger": librdkafka_logger(), **conf, "on_delivery": delivered})

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
