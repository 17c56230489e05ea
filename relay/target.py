"""The target contracts: what a custom target implements, and what the relay drives.

A target makes records durable somewhere. The relay's exactly-once guarantee rests on two promises
every target makes:

1. ``high_watermarks`` reports, for each source partition, the next source offset that is NOT
   durably in the target (its *resume position*). The relay resumes from exactly there.
2. Records are acknowledged only once durable, and a record reported by ``high_watermarks`` as
   written is never written again.

Two shapes of the same contract:

* :class:`Target`, the public one a custom target implements: it receives one
  :class:`~relay.message.Message` at a time. The relay drives it through
  :class:`relay.adapter.MessageTarget`, which builds each record's ``Message`` once.
* :class:`RunTarget`, what the relay drives: it receives :class:`~relay.run.Run` objects, one
  source partition's records as consumed, and acknowledges runs. The built-in targets implement it.

Lifecycle (both): ``high_watermarks`` (any number of times) → ``start`` once → writes and
``flush`` from the relay's thread → ``close`` once. After ``close`` no method is called again.
Acknowledgements may come from any thread the target owns, but never after ``close`` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from relay.errors import RelayError
from relay.message import Message, Offsets, SourcePartition
from relay.run import Run
from relay.settings import TopicConfig

AckCallback = Callable[[Sequence[Message]], None]


class TargetError(RelayError):
    """The target cannot go on: the relay stops with a non-zero exit; nothing was acknowledged."""

    code = "target"


class TargetRestart(RelayError):
    """The target dropped everything not yet acknowledged and is ready again.

    Raised by a write or ``flush`` when the target had to re-establish itself (for example a
    transactional producer that was fenced). The relay then calls ``high_watermarks`` again and
    re-reads the sources from there, so nothing is lost and nothing is written twice.
    """

    code = "target_restart"


@runtime_checkable
class Target(Protocol):
    """Where relayed records go, one :class:`Message` at a time: the contract of a custom target."""

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
    """What a custom target adds to remember read positions that no written record carries (optional).

    The relay reads records a filter drops, transaction markers and gaps it skips (``on_gap:
    skip``); none of these reach ``write``, so without this their partition's position stays at
    the last record written, and they are read (and a skipped gap reported) again after a
    restart.
    """

    def progress(self, positions: Mapping[SourcePartition, int]) -> None:
        """The relay has read each partition up to (not including) its offset here, and has written
        every record it keeps below it. The target may store these positions with what it commits
        next (never before the records written before this call, and never once it dropped those
        records: a restart drops this progress too); it need not store them at all."""
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
class RouteTaker(Protocol):
    """What a target adds to hear of source topics selected while the relay runs (live discovery)."""

    def add_routes(self, routes: Sequence[TopicConfig]) -> None:
        """Records of ``routes``' source topics follow (the relay's thread, before their partitions
        are passed to ``high_watermarks``)."""
        ...


class Acks(Protocol):
    """What a :class:`RunTarget` tells the relay, from any thread it owns."""

    def acked(self, runs: Sequence[Run]) -> None:
        """``runs`` are durable (whole runs, or the parts :meth:`Run.split` made of them), in the
        order they were written per source partition."""
        ...

    def failed(self) -> None:
        """The target failed or restarted: whatever waits for an acknowledgement must wake and ask
        the target (its next write or ``flush`` raises the failure)."""
        ...


@runtime_checkable
class RunTarget(Protocol):
    """What the relay drives: runs in, runs acknowledged. The built-in targets implement it.

    The promises of the module docstring hold per record. A run without records is progress
    (see :mod:`relay.run`): the target commits its ``next`` with what it commits next, and drops
    it, unacknowledged, with everything else it holds when it restarts.
    """

    def high_watermarks(self, partitions: Sequence[SourcePartition]) -> Offsets:
        """As :meth:`Target.high_watermarks`."""
        ...

    def start(self, acks: Acks) -> None:
        """Start background work; ``acks`` hears of durable runs and of failures."""
        ...

    def write_runs(self, runs: Sequence[Run], more: bool) -> None:
        """Queue ``runs``; blocks while the target is full. ``more`` False: the source had nothing
        more to give after these, so waiting for more records before committing only adds latency.

        Raises :class:`TargetError` if the target has failed, or :class:`TargetRestart`.
        """
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """As :meth:`Target.flush`."""
        ...

    def close(self) -> None:
        """As :meth:`Target.close`."""
        ...
