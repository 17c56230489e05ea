"""What the ``lfs`` and ``hydrate`` targets share: they write through a Kafka target.

Each keeps work of its own ahead of the Kafka target (uploads, fetches) and must forget it when
that target restarts (the relay then reads those records again), or nothing it holds would ever
be written. :class:`ThroughKafka` is that plumbing, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from relay.message import Message, Offsets, SourcePartition
from relay.target import TargetRestart
from targets.kafka.target import KafkaTarget


class ThroughKafka:
    """Base of a target that writes through ``self.kafka``; subclasses say what :meth:`_drop_pending` forgets."""

    kafka: KafkaTarget

    def _drop_pending(self) -> None:
        """Forget the work kept ahead of the Kafka target (it restarted, or the target closes)."""
        raise NotImplementedError

    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        """As the Kafka target: positions read back from the target cluster."""
        return self.kafka.high_watermarks(partitions)

    def progress(self, positions: Mapping[SourcePartition, int]) -> None:
        """As the Kafka target: read positions no record carries go with its next transaction."""
        self.kafka.progress(positions)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record written so far is committed, the work ahead of it included."""
        try:
            return self.kafka.flush(timeout)
        except TargetRestart:
            self._drop_pending()
            raise

    def _write_through(self, message: Message) -> None:
        """Queue ``message`` with the Kafka target (blocks while it is full)."""
        try:
            self.kafka.write(message)
        except TargetRestart:
            self._drop_pending()
            raise
