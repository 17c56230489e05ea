"""Where the relay has read each source partition up to: its *read positions*.

Four things are called positions around the relay; each has one name:

* **read position** (this module): the next source offset the relay reads, per partition it owns.
  It lives in memory on the relay's thread, moves as runs are handed to the target, and only
  places a consumer (after a failover, a rebalance, a target restart). It is never what the relay
  resumes from after a crash.
* **resume position** (``Target.high_watermarks``): the next source offset *not* durably in the
  target, which the target reports and every start resumes from.
* **entry** (``targets.kafka.positions``): how the Kafka target stores resume positions, in its
  positions topic, in the transaction of the records they describe.
* **progress**: a run with no record (:class:`relay.run.Run`): a read position handed to the
  target because no record carries it.

Every method runs on the relay's thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from relay.message import SourcePartition
from relay.sourcepool import Fingerprint


class ReadPositions:
    """The relay's read position per owned partition, the record read last there, and what ``stop_at_end`` waits for."""

    def __init__(self) -> None:
        self._next: dict[SourcePartition, int] = {}
        self._fingerprints: dict[SourcePartition, Fingerprint] = {}
        # stop_at_end: the end offsets seen at start, and the partitions that reached them.
        self._ends: dict[SourcePartition, int] = {}
        self._done: set[SourcePartition] = set()
        # Moves no record carried (an end of partition past transaction markers, a gap skipped), not
        # handed to the target yet: the relay hands them over as progress with what it writes next.
        self._moved: dict[SourcePartition, int] = {}

    # -- which partitions ----------------------------------------------------------------------
    def owned(self) -> list[SourcePartition]:
        """The partitions read now."""
        return list(self._next)

    def get(self, sp: SourcePartition) -> int:
        """The read position of ``sp`` (-1: from the log's beginning, nothing read yet; or not owned)."""
        return self._next.get(sp, -1)

    def snapshot(self) -> dict[SourcePartition, int]:
        """A copy of every read position."""
        return dict(self._next)

    def resumed(self, positions: Mapping[SourcePartition, int]) -> None:
        """Read ``positions`` from here on (what the target reported); what was read before there is forgotten."""
        for sp, offset in positions.items():
            self._next[sp] = offset
            self._fingerprints.pop(sp, None)
            self._moved.pop(sp, None)
            self._check_done(sp, offset)

    def forget(self, partitions: Iterable[SourcePartition]) -> None:
        """Stop tracking ``partitions`` (another instance owns them now)."""
        for sp in partitions:
            self._next.pop(sp, None)
            self._fingerprints.pop(sp, None)
            self._moved.pop(sp, None)

    # -- moving --------------------------------------------------------------------------------
    def advanced(self, sp: SourcePartition, offset: int, newest: Fingerprint | None) -> None:
        """``sp`` was read and handed to the target up to ``offset``; ``newest`` is the record read last."""
        if offset > self._next.get(sp, -1):
            self._next[sp] = offset
            self._check_done(sp, offset)
        if newest is not None:
            self._fingerprints[sp] = newest
        moved = self._moved.get(sp)
        if moved is not None and moved <= offset:
            del self._moved[sp]

    def at_end(self, sp: SourcePartition, offset: int) -> None:
        """The reader reached the end of ``sp`` at ``offset`` (past any transaction markers)."""
        if offset > self._next.get(sp, -1) and sp in self._next:
            self._next[sp] = offset
            self._moved[sp] = offset
        self._check_done(sp, offset)

    def skip(self, sp: SourcePartition, offset: int) -> None:
        """A gap moved ``sp`` to ``offset``, the log start (``on_gap: skip``)."""
        self._next[sp] = offset
        self._fingerprints.pop(sp, None)
        self._moved[sp] = offset
        self._check_done(sp, offset)

    def take_moves(self) -> dict[SourcePartition, int]:
        """The moves no record carried since the last call, to hand to the target as progress."""
        moved, self._moved = self._moved, {}
        return moved

    # -- fingerprints (failover verification) ------------------------------------------------------
    def fingerprint(self, sp: SourcePartition) -> Fingerprint | None:
        """The record read last on ``sp``, if any was read since it was resumed."""
        return self._fingerprints.get(sp)

    def fingerprinted(self) -> set[SourcePartition]:
        """The partitions with a record read since they were resumed."""
        return set(self._fingerprints)

    def forget_fingerprints(self, partitions: Iterable[SourcePartition] | None = None) -> None:
        """Records read before now on ``partitions`` (default: all) are not to be verified: positions are
        read again from the target, or the source's log no longer holds the record read last."""
        if partitions is None:
            self._fingerprints.clear()
        for sp in partitions or ():
            self._fingerprints.pop(sp, None)

    # -- stop_at_end ---------------------------------------------------------------------------------
    def stop_at(self, ends: Mapping[SourcePartition, int]) -> None:
        """Stop once every partition of ``ends`` is read up to its end offset there.

        A read position beyond the end is not done: the source lost records the relay already
        relayed (or trails), and the relay waits for it instead of calling the run complete.
        """
        self._ends = dict(ends)
        self._done = {sp for sp, end in self._ends.items() if self._next.get(sp, -1) == max(end, 0)}

    def finished(self) -> bool:
        """Whether every partition reached the end offset :meth:`stop_at` was given."""
        return len(self._done) >= len(self._ends)

    def stopping_at(self) -> int:
        """How many partitions :meth:`stop_at` was given."""
        return len(self._ends)

    def remaining(self) -> tuple[int, int]:
        """(records, partitions) left before every end offset is reached."""
        records = 0
        for sp, end in self._ends.items():
            if sp not in self._done:
                nxt = self._next.get(sp, -1)
                records += max(0, end - nxt) if nxt >= 0 else end
        return records, len(self._ends) - len(self._done)

    def _check_done(self, sp: SourcePartition, offset: int) -> None:
        end = self._ends.get(sp)
        if end is not None and offset >= end:
            self._done.add(sp)
