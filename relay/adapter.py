"""A custom target, one :class:`~relay.message.Message` at a time, driven as a :class:`~relay.target.RunTarget`.

The relay hands every target runs; a custom target implements the public :class:`Target`
contract, which takes messages. :class:`MessageTarget` sits between: each run's records become
``Message`` objects (built once, see :meth:`Run.messages`) and are written in order; a run's
``next`` goes to :meth:`ProgressSink.progress` when the target has it; acknowledged messages are
counted back into the runs they came in, which are acknowledged, in order, once all their
records are.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from relay.message import Message, Offsets, SourcePartition
from relay.run import Run
from relay.target import Acks, PartitionOwner, ProgressSink, Target, TargetRestart


class _Pending:
    """A run written to the target, and how many of its records are not acknowledged yet."""

    __slots__ = ("left", "run")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.left = len(run)


class MessageTarget:
    """Drives a :class:`Target` as a :class:`RunTarget` (and a :class:`PartitionOwner` if it is one)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._progress = target if isinstance(target, ProgressSink) else None
        self._acks: Acks | None = None
        # Runs written, per source partition, oldest first; the target's thread acknowledges them
        # while the relay's thread appends, hence the lock.
        self._lock = threading.Lock()
        self._pending: dict[SourcePartition, deque[_Pending]] = {}

    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        """The target's resume positions."""
        return self.target.high_watermarks(partitions)

    def start(self, acks: Acks) -> None:
        """Start the target; its acknowledgements are turned into acknowledged runs."""
        self._acks = acks
        self.target.start(self._acked)

    def write_runs(self, runs: Sequence[Run], more: bool) -> None:
        """Write each run's records as messages, in order, then its ``next`` as progress."""
        try:
            for run in runs:
                with self._lock:
                    self._pending.setdefault(run.source, deque()).append(_Pending(run))
                for message in run.messages():
                    self.target.write(message)
                if self._progress is not None:
                    self._progress.progress({run.source: run.next})
        except TargetRestart:
            self._forget_pending()
            raise
        self._ack_ready({run.source for run in runs if not run.records})

    def flush(self, timeout: float | None = None) -> bool:
        """As the target's."""
        try:
            return self.target.flush(timeout)
        except TargetRestart:
            self._forget_pending()
            raise

    def _forget_pending(self) -> None:
        """The target dropped what it held: none of it will be acknowledged (the relay reads it again)."""
        with self._lock:
            self._pending.clear()

    def close(self) -> None:
        """As the target's."""
        self.target.close()

    def release(self, partitions: Sequence[SourcePartition], flush: bool) -> None:
        """Group mode: as the target's, which must be a :class:`PartitionOwner`."""
        if not isinstance(self.target, PartitionOwner):
            raise TypeError(f"target {type(self.target).__name__} does not implement relay.target.PartitionOwner")
        self.target.release(partitions, flush)
        with self._lock:
            for sp in partitions:
                self._pending.pop(sp, None)

    def _acked(self, messages: Sequence[Message]) -> None:
        """The target made ``messages`` durable: count them off their runs, oldest first."""
        touched: set[SourcePartition] = set()
        with self._lock:
            for msg in messages:
                queue = self._pending.get(msg.source)
                if not queue:
                    continue
                for pending in queue:
                    if pending.left > 0:
                        pending.left -= 1
                        break
                touched.add(msg.source)
        self._ack_ready(touched)

    def _ack_ready(self, partitions: set[SourcePartition]) -> None:
        """Acknowledge, per partition, the leading runs whose records are all acknowledged."""
        done: list[Run] = []
        with self._lock:
            for sp in partitions:
                queue = self._pending.get(sp)
                while queue and queue[0].left == 0:
                    done.append(queue.popleft().run)
        if done and self._acks is not None:
            self._acks.acked(done)
