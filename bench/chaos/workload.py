"""The workload: continuous producers into the sources, and the copier that feeds the standby with a lag.

Both are threads of the harness. Every loop is paced and checks a stop event; every wait is bounded.
"""

from __future__ import annotations

import collections
import functools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from bench.chaos.model import (
    LARGE_MAX,
    LARGE_MIN,
    MIB,
    SMALL,
    Entry,
    Ledger,
    ValueMaker,
    client_conf,
    record_headers,
    record_key,
    sha256,
)
from kafka_lfs_relay.sandbox import KafkaCluster

# Longer than any outage the nemesis makes (30 s) plus a restart, so the producers never give up
# on a record: a timed-out idempotent record would be "possibly persisted", and the ledger could
# not say whether the source holds it.
MESSAGE_TIMEOUT_MS = 600_000

PRODUCER = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 10,
    "message.max.bytes": 16 * MIB,
    "message.timeout.ms": MESSAGE_TIMEOUT_MS,
    "queue.buffering.max.kbytes": 256 * 1024,
    "socket.timeout.ms": 10_000,
    "reconnect.backoff.max.ms": 2_000,
}


class Feeder(threading.Thread):
    """Produces ``rate`` records/s into ``topic`` (a ``large_fraction`` of them 1-8 MiB), plus bursts on demand."""

    def __init__(
        self,
        cluster: KafkaCluster,
        ledger: Ledger,
        rate: float,
        large_fraction: float,
        seed: int,
        values: ValueMaker,
    ) -> None:
        super().__init__(name=f"feed-{ledger.pipe}", daemon=True)
        self.cluster = cluster
        self.ledger = ledger
        self.topic = ledger.pipe
        self.rate = rate
        self.large_fraction = large_fraction
        self.rng = random.Random(seed)
        self.values = values
        self.stopping = threading.Event()
        self.error: str | None = None
        self._burst = 0
        self._lock = threading.Lock()
        self._seq = 0
        self.producer = Producer({**client_conf(cluster), **PRODUCER})

    def burst(self, records: int) -> None:
        """Produce ``records`` extra small records as fast as the producer takes them."""
        with self._lock:
            self._burst += records

    def _one(self, size: int) -> None:
        seq = self._seq
        self._seq += 1
        partition = self.rng.randrange(self.ledger.partitions)
        key = record_key(self.ledger.pipe, seq)
        value = self.values.make(key, seq, size)
        self.ledger.add(Entry(seq, partition, size, sha256(value)))

        def delivered(err: KafkaError | None, msg: Any, seq: int = seq) -> None:
            if err is not None:
                self.ledger.fail(seq, err.str())
            else:
                self.ledger.delivered(seq, msg.offset())

        deadline = time.monotonic() + 120
        while True:
            try:
                headers: list[tuple[str, str | bytes | None]] = list(record_headers(seq))
                self.producer.produce(
                    self.topic, value, key, partition=partition, headers=headers, on_delivery=delivered
                )
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"producer of {self.topic}: queue full for 120 s") from None
                self.producer.poll(0.1)

    def run(self) -> None:
        try:
            tick = 0.05
            due = 0.0
            started = time.monotonic()
            while not self.stopping.is_set():
                due += self.rate * tick
                n = int(due)
                due -= n
                with self._lock:
                    extra, self._burst = min(self._burst, 500), max(0, self._burst - 500)
                for _ in range(n):
                    if self.rng.random() < self.large_fraction:
                        self._one(self.rng.randint(LARGE_MIN, LARGE_MAX))
                    else:
                        self._one(SMALL)
                for _ in range(extra):
                    self._one(SMALL)
                self.producer.poll(0)
                elapsed = time.monotonic() - started
                started += elapsed
                self.stopping.wait(max(0.0, tick - elapsed))
        except Exception as exc:  # reported by the run, which then fails
            self.error = f"{type(exc).__name__}: {exc}"

    def finish(self, timeout: float) -> int:
        """Stop producing and wait for every delivery report; returns how many are still missing."""
        self.stopping.set()
        self.join(60)
        self.producer.flush(timeout)
        return self.ledger.undelivered()


class Copier(threading.Thread):
    """Copies ``topic`` from ``source`` to ``standby`` record by record, in order, after a random lag.

    One idempotent producer, partition by partition in order, and nothing else writing the standby's
    topic: the standby holds the same records at the same offsets. Each delivery report is checked
    against the source offset, so a divergence is seen at once, not guessed at the end.
    """

    def __init__(
        self,
        source: KafkaCluster,
        standby: KafkaCluster,
        topic: str,
        partitions: int,
        max_lag: float,
        seed: int,
        on_event: Callable[[str, dict[str, Any]], object],
    ) -> None:
        super().__init__(name="copier", daemon=True)
        self.topic = topic
        self.partitions = partitions
        self.max_lag = max_lag
        self.rng = random.Random(seed)
        self.on_event = on_event
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.copied = [0] * partitions  # next source offset whose copy the standby acknowledged
        self.lag = 0.0
        self._lock = threading.Lock()
        self.consumer = Consumer(
            {
                **client_conf(source),
                "group.id": "chaos-copier",
                "enable.auto.commit": False,
                "auto.offset.reset": "error",
                "fetch.max.bytes": 32 * MIB,
                "max.partition.fetch.bytes": 16 * MIB,
                "queued.max.messages.kbytes": 64 * 1024,
            }
        )
        self.producer = Producer({**client_conf(standby), **PRODUCER})

    def _on_delivery(self, partition: int, offset: int, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"copy of {self.topic}/{partition}@{offset} failed: {err.str()}")
        elif msg.offset() != offset:
            self.errors.append(
                f"standby diverged: {self.topic}/{partition}@{offset} landed at offset {msg.offset()} on the standby"
            )
        else:
            with self._lock:
                self.copied[partition] = max(self.copied[partition], offset + 1)

    def run(self) -> None:
        pending: collections.deque[tuple[float, Any]] = collections.deque()
        pending_bytes = 0
        next_lag_change = 0.0
        try:
            self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)])
            while not self.stopping.is_set():
                now = time.monotonic()
                if now >= next_lag_change:
                    self.lag = self.rng.uniform(0.0, self.max_lag)
                    next_lag_change = now + self.rng.uniform(10, 30)
                    self.on_event("standby_lag", {"seconds": round(self.lag, 2)})
                if pending_bytes < 128 * MIB:
                    for msg in self.consumer.consume(200, 0.05):
                        err = msg.error()
                        if err is not None:
                            if err.code() != KafkaError._PARTITION_EOF:
                                self.errors.append(f"copier read error: {err.str()}")
                            continue
                        pending.append((time.monotonic() + self.lag, msg))
                        pending_bytes += len(msg.value() or b"")
                else:
                    time.sleep(0.05)
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    _, msg = pending.popleft()
                    pending_bytes -= len(msg.value() or b"")
                    partition, offset = msg.partition(), msg.offset()
                    self._produce(msg, partition, offset)
                self.producer.poll(0)
            while pending:  # stopping: copy what was read, without the lag
                _, msg = pending.popleft()
                self._produce(msg, msg.partition(), msg.offset())
        except Exception as exc:
            self.errors.append(f"copier stopped: {type(exc).__name__}: {exc}")

    def _produce(self, msg: Any, partition: int, offset: int) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    msg.value(),
                    msg.key(),
                    partition=partition,
                    headers=msg.headers(),
                    timestamp=msg.timestamp()[1],
                    on_delivery=functools.partial(self._on_delivery, partition, offset),
                )
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise RuntimeError("standby producer queue full for 120 s") from None
                self.producer.poll(0.1)

    def position(self) -> list[int]:
        """Per partition, the next source offset the standby holds a copy of."""
        with self._lock:
            return list(self.copied)

    def finish(self, ends: list[int], timeout: float) -> bool:
        """Wait (bounded) until the standby holds everything up to ``ends``, then stop; True if it does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.errors:
            if all(c >= e for c, e in zip(self.position(), ends, strict=True)):
                break
            time.sleep(0.5)
        self.stopping.set()
        self.join(60)
        self.producer.flush(60)
        self.consumer.close()
        return all(c >= e for c, e in zip(self.position(), ends, strict=True))
