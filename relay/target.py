"""The target contract: everything a custom target implements, in one place.

A target receives :class:`~relay.message.Message` objects in source order per source partition
and makes them durable somewhere. The relay's exactly-once guarantee rests on two promises a
target makes:

1. ``high_watermarks`` reports, for each source partition, the next source offset that is NOT
   durably in the target. The relay resumes from exactly there.
2. ``on_ack`` is called only for records that are durable, and a record reported by
   ``high_watermarks`` as written is never written again.

Lifecycle: ``high_watermarks`` (any number of times) → ``start`` once → ``write``/``flush`` from
the relay's thread → ``close`` once. After ``close`` no method is called again. ``on_ack`` may be
called from any thread the target owns, but never after ``close`` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from relay.errors import RelayError
from relay.message import Message, Offsets, RawBatch, SourcePartition

AckCallback = Callable[[Sequence[Message]], None]
RawAckCallback = Callable[[Sequence[RawBatch]], None]


class TargetError(RelayError):
    """The target cannot go on: the relay stops with a non-zero exit; nothing was acknowledged."""

    code = "target"


class TargetRestart(RelayError):
    """The target dropped everything not yet acknowledged and is ready again.

    Raised by ``write`` or ``flush`` when the target had to re-establish itself (for example a
    transactional producer that was fenced). The relay then calls ``high_watermarks`` again and
    re-reads the sources from there, so nothing is lost and nothing is written twice.
    """

    code = "target_restart"


@runtime_checkable
class Target(Protocol):
    """Where relayed records go. Implementations: ``targets.kafka``, ``targets.lfs``, ``targets.hydrate``."""

    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        """Next source offset to read for each of ``partitions``, from what the target holds.

        A partition the target holds nothing of is left out of the result (return empty, not
        an error): the relay then reads that partition from the source's beginning.
        """
        ...

    def start(self, on_ack: AckCallback) -> None:
        """Start background work (batching, flushing). Returns at once.

        ``on_ack`` is called with records once they are durable, in the order they were written
        per source partition.
        """
        ...

    def write(self, message: Message) -> None:
        """Queue ``message``; blocks while the target's buffer is full (backpressure).

        Raises :class:`TargetError` if the target has failed, or :class:`TargetRestart`.
        """
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every written record is acknowledged; False if ``timeout`` ran out first.

        Raises like ``write``.
        """
        ...

    def close(self) -> None:
        """Release every resource. Called once, last, after ``flush`` when the relay drains.

        Records not acknowledged by then are abandoned: they were never reported as written, so
        the next start reads them again from the source.
        """
        ...


@runtime_checkable
class ProgressSink(Protocol):
    """What a target adds to remember read positions that no written record carries (optional).

    The relay reads records a filter drops, transaction markers and gaps it skips (``on_gap:
    skip``); none of these reach ``write``, so without this their partition's position stays at
    the last record written, and they are read (and a skipped gap reported) again after a
    restart.
    """

    def progress(self, positions: Mapping[SourcePartition, int]) -> None:
        """The relay has read each partition up to (not including) its offset here, and has written
        every record it keeps below it. The target may store these positions with what it commits
        next (never before the records written before this call); it need not store them at all."""
        ...


@runtime_checkable
class PartitionOwner(Protocol):
    """What a target adds to take part in group mode (partitions come and go while it runs)."""

    def release(self, partitions: Sequence[SourcePartition], flush: bool) -> None:
        """Stop writing ``partitions``. ``flush``: commit what is in flight for them first
        (a revocation); otherwise abandon it unacknowledged (a loss: someone else owns them).

        ``high_watermarks`` is called again when partitions are (re)assigned, and must fence
        any earlier writer of them before it reads positions back.
        """
        ...


@runtime_checkable
class BatchTarget(Protocol):
    """An optional extension for the passthrough fast path; only the built-in Kafka target has it.

    Custom targets implement :class:`Target` alone and always receive :class:`Message` objects.
    When no filter is configured, the relay asks a target that has this extension whether it can
    take records as they were consumed (:class:`~relay.message.RawBatch`: no ``Message``, no
    per-record callback). If it can, every record is then written through ``write_batch`` and
    acknowledged through ``on_ack``; ``write`` is not called. The promises of :class:`Target` hold
    unchanged, per record.
    """

    def passthrough(self, on_ack: RawAckCallback) -> str | None:
        """Called once, before ``start``: None if the target takes raw batches from now on (then
        ``on_ack`` receives them once durable, whole or as parts of them: see
        :meth:`RawBatch.only` and :meth:`RawBatch.split`), else why not (for the start-up log).
        """
        ...

    def write_batch(self, batch: RawBatch) -> None:
        """Queue ``batch``; blocks and raises like :meth:`Target.write`."""
        ...
