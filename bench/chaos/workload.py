"""The workload: continuous producers into the sources, and the copier that feeds the standby with a lag.

Both are threads of the harness. Every loop is paced and checks a stop event; every wait is bounded.
"""

from __future__ import annotations

import collections
import functools
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bench.chaos.model import (
    LARGE_MAX,
    LARGE_MIN,
    MIB,
    SMALL,
    Entry,
    Ledger,
    ValueMaker,
    client_conf,
    pick_shape,
    record_fields,
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
    # A partition added to a topic is produced to as soon as the ledger knows it: the producer must
    # learn of it in seconds, not at the default refresh (5 minutes), or the record waits undelivered.
    "topic.metadata.refresh.interval.ms": 1_000,
}


class Feeder(threading.Thread):
    """Produces ``rate`` records/s into ``topic`` (a ``large_fraction`` of them 1-8 MiB), plus bursts on demand.

    Every record gets a shape (:func:`bench.chaos.model.pick_shape`: null and empty keys and
    values, duplicate and null-valued headers) and a timestamp: mostly now, a share up to an hour
    in the past or a few minutes ahead (out of order), and, in a future burst, up to 2 h ahead.
    ``pause`` stops producing and waits for every delivery report (before the operations nemesis
    deletes the topic); ``resume`` goes on, with a new producer for a topic created again.
    """

    def __init__(
        self,
        cluster: KafkaCluster,
        ledger: Ledger,
        rate: float,
        large_fraction: float,
        seed: int,
        values: ValueMaker,
        untyped_large: bool = True,
    ) -> None:
        super().__init__(name=f"feed-{ledger.pipe}", daemon=True)
        self.cluster = cluster
        self.ledger = ledger
        self.topic = ledger.pipe
        self.rate = rate
        self.large_fraction = large_fraction
        self.untyped_large = untyped_large
        self.rng = random.Random(seed)
        self.values = values
        self.stopping = threading.Event()
        self.error: str | None = None
        self._burst = 0
        self._future = 0
        self._lock = threading.Lock()
        self._seq = 0
        self._pause = threading.Event()
        self._idle = threading.Event()
        self.producer = Producer({**client_conf(cluster), **PRODUCER})

    def burst(self, records: int, future: bool = False) -> None:
        """Produce ``records`` extra small records as fast as the producer takes them (stamped up to 2 h ahead)."""
        with self._lock:
            if future:
                self._future += records
            else:
                self._burst += records

    def _timestamp(self, future: bool) -> int:
        now = int(time.time() * 1000)
        if future:
            return now + self.rng.randint(0, 2 * 3600 * 1000)
        draw = self.rng.random()
        if draw < 0.10:
            return now - self.rng.randint(1, 3600 * 1000)
        if draw < 0.15:
            return now + self.rng.randint(1, 300 * 1000)
        return now

    def _one(self, size: int, future: bool = False) -> None:
        seq = self._seq
        self._seq += 1
        ledger = self.ledger
        partition = self.rng.randrange(ledger.partitions)
        shape = pick_shape(self.rng, size > SMALL, self.untyped_large)
        key, headers = record_fields(ledger.pipe, seq, shape)
        value = self.values.value(ledger.pipe, seq, shape, size)
        stamp = self._timestamp(future)
        ledger.add(Entry(seq, partition, len(value or b""), sha256(value), -1, stamp, shape, ledger.generation))

        def delivered(err: KafkaError | None, msg: Any, seq: int = seq) -> None:
            if err is not None:
                self.ledger.fail(seq, err.str())
            else:
                self.ledger.delivered(seq, msg.offset())

        deadline = time.monotonic() + 120
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    value,
                    key,
                    partition=partition,
                    headers=list(headers),
                    timestamp=stamp,
                    on_delivery=delivered,
                )
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"producer of {self.topic}: queue full for 120 s") from None
                self.producer.poll(0.1)
            except KafkaException as exc:
                # A partition just added: the ledger knows it before this producer's metadata does.
                if exc.args[0].code() != KafkaError._UNKNOWN_PARTITION or time.monotonic() > deadline:
                    raise
                self.producer.poll(0.5)

    def run(self) -> None:
        try:
            tick = 0.05
            due = 0.0
            started = time.monotonic()
            while not self.stopping.is_set():
                if self._pause.is_set():
                    self.producer.flush(MESSAGE_TIMEOUT_MS / 1000)
                    self._idle.set()
                    self.stopping.wait(0.1)
                    started, due = time.monotonic(), 0.0
                    continue
                due += self.rate * tick
                n = int(due)
                due -= n
                with self._lock:
                    extra, self._burst = min(self._burst, 500), max(0, self._burst - 500)
                    future, self._future = min(self._future, 500), max(0, self._future - 500)
                for _ in range(n):
                    if self.rng.random() < self.large_fraction:
                        self._one(self.rng.randint(LARGE_MIN, LARGE_MAX))
                    else:
                        self._one(SMALL)
                for _ in range(extra):
                    self._one(SMALL)
                for _ in range(future):
                    self._one(SMALL, future=True)
                self.producer.poll(0)
                elapsed = time.monotonic() - started
                started += elapsed
                self.stopping.wait(max(0.0, tick - elapsed))
        except Exception as exc:  # reported by the run, which then fails
            self.error = f"{type(exc).__name__}: {exc}"

    def pause(self, timeout: float) -> bool:
        """Stop producing and wait (bounded) until every record has its delivery report; True if so."""
        self._idle.clear()
        self._pause.set()
        return self._idle.wait(timeout) and self.ledger.undelivered() == 0

    def resume(self, new_producer: bool) -> None:
        """Produce again; with a new producer (and so a new producer id) for a topic created again."""
        if new_producer:
            self.producer = Producer({**client_conf(self.cluster), **PRODUCER})
        self._pause.clear()

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
    against the source offset, so a divergence is seen at once, not guessed at the end. The
    operations nemesis asks it (:meth:`request`, carried out on its own thread, between reads) to
    follow partitions added to the topic, and to let go of the topic while it is deleted and
    created again, then start over from its beginning with a new producer.
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
        self.standby = standby
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
        self._requests: queue.Queue[tuple[str, int, threading.Event]] = queue.Queue()
        self._suspended = False
        self._consumer_conf = {
            **client_conf(source),
            "group.id": "chaos-copier",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
            "fetch.max.bytes": 32 * MIB,
            "max.partition.fetch.bytes": 16 * MIB,
            "queued.max.messages.kbytes": 64 * 1024,
        }
        self.consumer = Consumer(self._consumer_conf)
        self.producer = Producer({**client_conf(standby), **PRODUCER})

    def request(self, action: str, partitions: int = 0, timeout: float = 120) -> bool:
        """Ask the copier's thread to ``grow`` to ``partitions``, ``suspend`` (let go of the topic) or
        ``restart`` (a topic created again, from its beginning); True once done."""
        done = threading.Event()
        self._requests.put((action, partitions, done))
        return done.wait(timeout)

    def _handle_requests(self, pending: collections.deque[tuple[float, Any]]) -> None:
        while not self._requests.empty():
            action, count, done = self._requests.get()
            if action == "grow":
                with self._lock:
                    self.copied += [0] * (count - len(self.copied))
                # The partitions it has go on from where it is (what it read is pending), the new ones from 0.
                have = self.consumer.position([TopicPartition(self.topic, p) for p in range(self.partitions)])
                starts = [tp.offset if tp.offset >= 0 else OFFSET_BEGINNING for tp in have]
                starts += [0] * (count - self.partitions)  # a new partition: its records start at 0
                self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in enumerate(starts)])
                self.partitions = count
            elif action == "suspend":
                while pending:  # nothing should be left: the caller waited for the copies
                    _, msg = pending.popleft()
                    self._produce(msg, msg.partition(), msg.offset())
                self.producer.flush(120)
                self.consumer.unassign()
                self._suspended = True
            elif action == "restart":
                # A new consumer as well as a new producer, and offset 0, not OFFSET_BEGINNING: the
                # consumer that had read the old topic once started the new one at the old topic's log
                # start (490, where the trimmer had deleted), skipping the new topic's first records.
                self.producer = Producer({**client_conf(self.standby), **PRODUCER})
                self.consumer.close()
                self.consumer = Consumer(self._consumer_conf)
                with self._lock:
                    self.copied = [0] * self.partitions
                self.consumer.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
                self._suspended = False
            done.set()

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
                self._handle_requests(pending)
                if self._suspended:
                    pending_bytes = 0
                    time.sleep(0.05)
                    continue
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
            except KafkaException as exc:
                # A partition just added to the standby: this producer's metadata has not caught up.
                if exc.args[0].code() != KafkaError._UNKNOWN_PARTITION or time.monotonic() > deadline:
                    raise
                self.producer.poll(0.5)

    def position(self) -> list[int]:
        """Per partition, the next source offset the standby holds a copy of."""
        with self._lock:
            return list(self.copied)

    def caught_up(self, ends: list[int]) -> bool:
        """Whether the standby holds a copy of everything below ``ends``."""
        return all(c >= e for c, e in zip(self.position(), ends, strict=True))

    def finish(self, ends: list[int], timeout: float) -> bool:
        """Wait (bounded) until the standby holds everything up to ``ends``, then stop; True if it does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.errors:
            if self.caught_up(ends):
                break
            time.sleep(0.5)
        self.stopping.set()
        self.join(60)
        self.producer.flush(60)
        self.consumer.close()
        return self.caught_up(ends)
