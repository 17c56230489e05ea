"""The Kafka target's accumulator: the batch being filled, the committed entries, and failures.

Two threads meet here, and only here, under one condition:

* the relay's thread adds runs (:meth:`Accumulator.add`), waits for a flush, and learns of a
  failure (every wait of it raises the failure);
* the sender's thread takes a batch once it is due (:meth:`Accumulator.take`: full, lingered
  long enough, a flush asked for, or the source had nothing more to give), executes its plans,
  and reports each outcome: :meth:`Accumulator.committed` or :meth:`Accumulator.fail`.

The sender pulls work and reports results; nothing here calls into the sender. While the sender
commits one batch the relay fills the next (double buffering), and it blocks only when both are
full. A failure drops the batch being filled with the one that failed: progress (a run with no
record) is dropped with the records it came after, so it never commits alone.

Entries whose map points a committed transaction could not write (see
:mod:`targets.kafka.positions`) wait here as *late* entries: the next transaction writes them, or,
when none follows within :data:`_LATE_INTERVAL`, one of their own; a flush writes them too, so a
drain or a revocation leaves every point written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping, Sequence

from relay.message import SourcePartition
from relay.run import Run
from relay.target import Acks, TargetRestart
from targets.kafka.plan import Committed, Plan, Planning, plan
from targets.kafka.positions import Entry
from targets.kafka.settings import BatchConfig

_PROGRESS_INTERVAL = 1.0
"""Seconds progress alone waits before it is committed: a relay whose filter drops everything must
not commit a transaction per poll."""

_LATE_INTERVAL = 1.0
"""Seconds late entries wait for a transaction to carry them before they get one of their own."""


class _Queued:
    """A run in the batch being filled, with what its records weigh toward ``batch.max_bytes``."""

    __slots__ = ("run", "weight", "weights")

    def __init__(self, run: Run, weights: Sequence[int] | None) -> None:
        self.run = run
        self.weights = weights
        self.weight = run.size if weights is None else sum(weights)


class Accumulator:
    """See the module docstring. Batches become plans as :func:`~targets.kafka.plan.plan` says with ``planning``."""

    def __init__(self, batch: BatchConfig, planning: Planning) -> None:
        self._conf = batch
        self._planning = planning
        self._transform = planning.transform
        self._acks: Acks | None = None
        self._cond = threading.Condition()
        self._current: list[_Queued] = []
        self._records = 0
        self._bytes = 0
        self._full = False
        self._since = 0.0
        self._progress_since = 0.0
        self._eager = False
        self._flush_requested = False
        self._sending = False
        self._closing = False
        self._failure: BaseException | None = None
        # The committed entry of every source partition written (the offset map grows from it), and
        # entries read or imported at start-up that no transaction wrote yet.
        self._entries: dict[SourcePartition, Entry] = {}
        self._unwritten: dict[SourcePartition, Entry] = {}
        self._late: dict[SourcePartition, Entry] = {}
        self._late_since = 0.0

    def start(self, acks: Acks) -> None:
        """Committed runs are acknowledged to ``acks``, and failures told to it, from here on."""
        self._acks = acks

    # -- the relay's thread -----------------------------------------------------------------------
    def add(self, runs: Sequence[tuple[Run, Sequence[int] | None]], more: bool) -> None:
        """Add ``runs`` (each with its records' weights, or None: their sizes) to the batch being filled.

        A full batch waits for the sender to take it; a run that does not fit is split, so a
        transaction never outgrows ``batch.max_records`` / ``max_bytes`` (but for a single record
        heavier than a whole batch, which goes alone). ``more`` False makes the batch due at once.
        """
        with self._cond:
            for run, weights in runs:
                self._add(run, weights)
            if not more and self._records:
                self._eager = True
                self._cond.notify_all()

    def _add(self, run: Run, weights: Sequence[int] | None) -> None:
        conf = self._conf
        while True:
            self._make_room()
            if not run.records:
                if not self._progress_since:
                    self._progress_since = time.monotonic()
                self._current.append(_Queued(run, None))
                return
            queued = _Queued(run, weights)
            room = conf.max_bytes - self._bytes
            fits = len(run) if queued.weight <= room else _fitting(run, weights, room, at_least_one=not self._records)
            fits = min(fits, conf.max_records - self._records)
            if fits >= len(run):
                self._append(queued)
                return
            if fits == 0:  # not even the next record fits: the batch is full
                self._full = True
                self._cond.notify_all()
                continue
            head, run = run.split(fits)
            head_weights = None if weights is None else weights[:fits]
            weights = None if weights is None else weights[fits:]
            self._append(_Queued(head, head_weights))

    def _append(self, queued: _Queued) -> None:
        self._current.append(queued)
        self._records += len(queued.run)
        self._bytes += queued.weight
        if self._is_full():
            self._cond.notify_all()

    def _is_full(self) -> bool:
        conf = self._conf
        return self._full or self._records >= conf.max_records or self._bytes >= conf.max_bytes

    def _make_room(self) -> None:
        """Under the lock: wait while the batch being filled is full, raise a failure, note when a batch begins."""
        while self._failure is None and not self._closing and self._is_full():
            self._cond.wait(0.5)
        self._raise_failure()
        if not self._records:
            self._since = time.monotonic()
            # An idle sender sleeps until notified: without this it would notice the first record
            # of a batch only at its next wake-up.
            self._cond.notify_all()

    def flush(self, timeout: float | None) -> bool:
        """Wait until everything added is committed; False if ``timeout`` ran out first (0: only look).
        Raises the failure of the sender."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._raise_failure()
            if timeout == 0:
                return not self._pending()
            self._flush_requested = True
            self._cond.notify_all()
            try:
                while self._failure is None and self._pending():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(0.5 if remaining is None else min(0.5, remaining))
            finally:
                self._flush_requested = False
            self._raise_failure()
        return True

    def _pending(self) -> bool:
        return bool(self._current or self._sending or self._unwritten or self._late)

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is None:
            return
        if isinstance(failure, TargetRestart):
            self._failure = None  # a restart is raised once: the relay re-reads positions and carries on
        raise failure

    # -- entries (the relay's thread at start-up and on a rebalance) ------------------------------------
    def resumed(self, entries: Mapping[SourcePartition, Entry], unwritten: Mapping[SourcePartition, Entry]) -> None:
        """Entries read back (and positions imported, to be written by the next transaction)."""
        with self._cond:
            self._entries.update(entries)
            for sp in entries:
                # An entry read back may be newer than a late one (another instance wrote meanwhile):
                # the late one's map point is given up rather than its older position written again.
                self._late.pop(sp, None)
            self._unwritten.update(unwritten)
            if unwritten:
                self._cond.notify_all()

    def released(self, partitions: Collection[SourcePartition]) -> None:
        """Group mode: ``partitions`` are not written here any more; drop what is queued for them."""
        with self._cond:
            kept = [q for q in self._current if q.run.source not in partitions]
            self._current = kept
            self._records = sum(len(q.run) for q in kept)
            self._bytes = sum(q.weight for q in kept)
            self._full = False
            self._cond.notify_all()
            for sp in partitions:
                self._entries.pop(sp, None)
                self._unwritten.pop(sp, None)
                self._late.pop(sp, None)

    # -- the sender's thread (targets.kafka.sender.Batches) ----------------------------------------
    def take_plans(self) -> list[Plan] | None:
        """The plans of the next batch once it is due; None when closing."""
        with self._cond:
            while not self._closing:
                if self._failure is None:
                    due_in = self._due_in()
                    if due_in <= 0:
                        runs = [q.run for q in self._current]
                        self._current, self._records, self._bytes, self._full = [], 0, 0, False
                        self._progress_since, self._eager = 0.0, False
                        self._sending = True
                        self._cond.notify_all()
                        current, unwritten = dict(self._entries), {**self._late, **self._unwritten}
                        break
                    self._cond.wait(min(due_in, 0.5))
                else:
                    self._cond.wait(0.5)
            else:
                return None
        # Planning is pure: done outside the lock, so the relay's thread can fill the next batch meanwhile.
        return plan(runs, current, unwritten, self._planning)

    def _due_in(self) -> float:
        """Seconds until what is pending must be sent (0 or less: now). Under the lock."""
        now = time.monotonic()
        if self._records:
            if self._is_full() or self._flush_requested or self._eager:
                return 0.0
            return self._conf.linger - (now - self._since)
        if self._unwritten or ((self._current or self._late) and self._flush_requested):
            return 0.0
        due = 0.5
        if self._current:
            due = _PROGRESS_INTERVAL - (now - self._progress_since)
        if self._late:
            due = min(due, _LATE_INTERVAL - (now - self._late_since))
        return due

    def committed(self, plan: Plan, outcome: Committed) -> None:
        """``plan`` committed: its entries are the current ones now, those whose map points it could not
        write are late, and its runs are acknowledged."""
        with self._cond:
            self._entries.update(outcome.entries)
            for sp in outcome.written:
                # What the plan took is written now, as it was or moved on; what came in since stays.
                took = plan.extra.get(sp)
                if took is not None and self._unwritten.get(sp) is took:
                    del self._unwritten[sp]
                if (took is not None and self._late.get(sp) is took) or sp in plan.moves:
                    self._late.pop(sp, None)
            for sp, entry in outcome.entries.items():
                if entry != outcome.written.get(sp):
                    if not self._late:
                        self._late_since = time.monotonic()
                    self._late[sp] = entry
        runs = plan.runs
        if runs:
            if self._transform is not None:
                self._transform.committed(runs)
            assert self._acks is not None
            self._acks.acked(runs)

    def lost(self, plan: Plan) -> None:
        """Group mode: another instance fenced the partition of ``plan``; its unwritten entry is the new
        owner's to write, and its runs are never acknowledged."""
        with self._cond:
            if plan.key is not None:
                self._unwritten.pop(plan.key, None)
                self._late.pop(plan.key, None)

    def sent(self) -> None:
        """The batch taken last is done with (every plan committed, or abandoned as lost)."""
        with self._cond:
            self._sending = False
            self._cond.notify_all()

    def fail(self, failure: BaseException) -> None:
        """The sender failed: drop the batch being filled with the one that failed, remember why, and wake
        every waiter (the relay's, in the target and in its budget; the transform's)."""
        with self._cond:
            self._current, self._records, self._bytes, self._full = [], 0, 0, False
            self._progress_since, self._eager = 0.0, False
            self._failure = failure
            # The relay stops, or reads positions back before it goes on: by then another instance may
            # have written newer ones, which a late entry's older position must not overwrite.
            self._late.clear()
            self._sending = False
            self._cond.notify_all()
        if self._transform is not None:
            self._transform.drop()
        if self._acks is not None:
            self._acks.failed()

    def close(self) -> None:
        """Stop handing out batches; waiters are woken."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()


def _fitting(run: Run, weights: Sequence[int] | None, room: int, at_least_one: bool) -> int:
    """How many of ``run``'s records, in order, weigh ``room`` or less (one at least, if ``at_least_one``: a
    single record heavier than a whole batch must still pass)."""
    fits = 0
    for weight in weights if weights is not None else run.weights():
        room -= weight
        if room < 0:
            break
        fits += 1
    return max(1, fits) if at_least_one else fits
