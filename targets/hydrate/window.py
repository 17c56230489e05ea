"""The payload window: how many payload bytes the hydrate target may hold, granted in source order."""

from __future__ import annotations

import threading


class Abandoned(Exception):
    """A fetch was dropped before it could start (the target restarted or is closing)."""


class PayloadWindow:
    """Payload bytes this target holds in memory, granted to fetches strictly in ticket order.

    A fetch of ``n`` bytes reserves what its payload costs at its peak, ``copies * n``: once
    handed to the Kafka target the record value, librdkafka's copy and (with compression) the
    compressed batch all live until the transaction commits. :meth:`release` gives the
    reservation back when that transaction commits, or when the fetch fails. Until
    :meth:`handed_over` the fetch is *ahead* of the producer.

    No single fetch may reserve more than ``limit``: :attr:`max_payload` (``limit // copies``)
    is the largest payload the window takes, and the target refuses a larger claim before it
    asks (:meth:`acquire` raises ``ValueError`` for one). A fetch is granted when it is its turn
    and its reservation fits beside what is held, or when nothing is ahead: then everything held
    belongs to records already handed to the producer, which may be waiting for this very record
    to complete their batch. That exception is what makes the window deadlock-free; since the
    Kafka target cuts batches at ``batch.max_bytes`` of claimed payload, it overshoots by at
    most one batch. ``reset`` forgets everything (a new generation); calls about older
    generations are ignored.
    """

    def __init__(self, limit: int, copies: int = 3) -> None:
        self.limit = max(1, limit)
        self.copies = copies
        self._cond = threading.Condition()
        self._generation = 0
        self._issued = 0
        self._serving = 0
        self._used = 0
        self._ahead = 0
        self._closed = False

    @property
    def max_payload(self) -> int:
        """The largest payload one fetch may reserve room for: the whole window, divided by ``copies``."""
        return self.limit // self.copies

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        return self._used

    @property
    def ahead(self) -> int:
        """Payload bytes of fetches not yet handed to the producer."""
        return self._ahead

    def ticket(self) -> tuple[int, int]:
        """A place in line: (generation, sequence number)."""
        with self._cond:
            ticket = (self._generation, self._issued)
            self._issued += 1
            return ticket

    def acquire(self, ticket: tuple[int, int], n: int) -> None:
        """Wait for ``ticket``'s turn and room for a payload of ``n`` bytes; :class:`Abandoned` after reset.

        ``ValueError`` at its turn if ``n`` is over :attr:`max_payload` (the turn then passes on).
        """
        generation, seq = ticket
        need = self.copies * n
        with self._cond:
            while True:
                if self._closed or generation != self._generation:
                    raise Abandoned
                if seq == self._serving and n > self.max_payload:
                    self._serving += 1  # refused at its turn; the next ticket's turn comes
                    self._cond.notify_all()
                    raise ValueError(
                        f"a payload of {n} bytes does not fit in a window of {self.limit} bytes ({self.copies} copies)"
                    )
                if seq == self._serving and (self._ahead == 0 or self._used + need <= self.limit):
                    break
                self._cond.wait()
            self._serving += 1
            self._used += need
            self._ahead += n
            self._cond.notify_all()

    def handed_over(self, generation: int, n: int) -> None:
        """The payload of a grant of ``n`` bytes went to the producer: it is no longer ahead."""
        with self._cond:
            if generation == self._generation:
                self._ahead = max(0, self._ahead - n)
                self._cond.notify_all()

    def release(self, generation: int, n: int, ahead: bool = False) -> None:
        """Give back the grant of ``n`` bytes made in ``generation`` (``ahead``: its fetch failed)."""
        with self._cond:
            if generation == self._generation:
                self._used = max(0, self._used - self.copies * n)
                if ahead:
                    self._ahead = max(0, self._ahead - n)
                self._cond.notify_all()

    def reset(self) -> None:
        """Forget every grant and every ticket; waiting acquirers raise :class:`Abandoned`."""
        with self._cond:
            self._generation += 1
            self._issued = self._serving = self._used = self._ahead = 0
            self._cond.notify_all()

    def close(self) -> None:
        """Refuse every acquirer from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
