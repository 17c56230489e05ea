"""What the relay does when the target acknowledges runs, or fails: budget, counts, lag in seconds.

:class:`RelayAcks` is the :class:`relay.target.Acks` the relay hands its target. Its methods run
on the target's thread and touch only what is safe there: the byte budget (a condition of its
own), Prometheus metrics, the ownership's acknowledged positions (see
:meth:`relay.ownership.Ownership.acked`) and the replication-lag clock (a lock of its own).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence

from prometheus_client import Gauge

from relay.budget import ByteBudget
from relay.health import RelayHealth
from relay.message import Message, SourcePartition
from relay.metrics import RelayMetrics
from relay.ownership import Ownership
from relay.run import Run


def _first_timestamp(run: Run) -> int:
    first = run.records[0]
    return first.timestamp_ms if isinstance(first, Message) else int(first.timestamp()[1])


class LagClock:
    """Replication lag in seconds per partition: how old the oldest record read and not yet committed is.

    For each source partition it keeps, oldest first, the runs written and not acknowledged (the
    ``next`` of each, and its first record's source timestamp). The lag is now minus the oldest of
    those timestamps, 0 once every record read is committed. It grows while the target is away
    or slow, and while a backlog is worked through; records not read yet are not counted (their
    age is unknown until they are read).
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._pending: dict[SourcePartition, deque[tuple[int, int]]] = {}

    def written(self, runs: Iterable[Run]) -> None:
        """``runs`` were handed to the target (the relay's thread)."""
        with self._lock:
            for run in runs:
                if run.records:
                    ts = _first_timestamp(run)
                    if ts > 0:
                        self._pending.setdefault(run.source, deque()).append((run.next, ts))

    def acked(self, runs: Iterable[Run]) -> None:
        """``runs`` are committed (the target's thread)."""
        with self._lock:
            for run in runs:
                queue = self._pending.get(run.source)
                while queue and queue[0][0] <= run.next:
                    queue.popleft()

    def forget(self, partitions: Iterable[SourcePartition]) -> None:
        """``partitions`` are no longer read here: their gauges go."""
        with self._lock:
            for sp in partitions:
                self._pending.pop(sp, None)
                self._gauge.remove(sp.topic, str(sp.partition))

    def reset(self) -> None:
        """The target dropped everything in flight (the relay reads it again)."""
        with self._lock:
            self._pending.clear()

    def report(self, partitions: Iterable[SourcePartition]) -> None:
        """Set the gauge of each of ``partitions`` (about once a second, the relay's thread)."""
        now_ms = time.time() * 1000
        with self._lock:
            oldest = {sp: queue[0][1] for sp, queue in self._pending.items() if queue}
        for sp in partitions:
            ts = oldest.get(sp)
            age = max(0.0, (now_ms - ts) / 1000) if ts is not None else 0.0
            self._gauge.labels(topic=sp.topic, partition=str(sp.partition)).set(age)


class RelayAcks:
    """The relay's side of :class:`relay.target.Acks`: release bytes, count, remember, wake waiters."""

    def __init__(
        self, budget: ByteBudget, metrics: RelayMetrics, health: RelayHealth, lag: LagClock, ownership: Ownership
    ) -> None:
        self._budget = budget
        self._metrics = metrics
        self._health = health
        self._lag = lag
        self._ownership = ownership

    def acked(self, runs: Sequence[Run]) -> None:
        """``runs`` are durable: give their bytes back, count them per partition, let the lag clock and
        the ownership know."""
        counts: dict[tuple[str, SourcePartition], list[int]] = {}
        total = 0
        for run in runs:
            c = counts.get((run.cluster, run.source))
            if c is None:
                c = counts[(run.cluster, run.source)] = [0, 0]
            c[0] += len(run)
            c[1] += run.size
            total += run.size
        self._ownership.acked(runs)
        self._lag.acked(runs)
        self._health.acked()
        for (cluster, sp), (n, size) in counts.items():
            if n:
                labels = {"source_cluster": cluster, "topic": sp.topic, "partition": str(sp.partition)}
                self._metrics.records_relayed.labels(**labels).inc(n)
                self._metrics.bytes_relayed.labels(**labels).inc(size)
        self._budget.release(total)

    def failed(self) -> None:
        """The target failed or restarted: wake the relay if it waits for bytes that will not come back."""
        self._budget.interrupt()
