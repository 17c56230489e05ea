"""The in-flight byte budget: how much the relay may hold between reading and acknowledgement."""

from __future__ import annotations

import threading
from collections.abc import Callable


class ByteBudget:
    """A counting semaphore in bytes.

    ``acquire`` blocks while the bytes in flight would exceed the limit, except when nothing is
    in flight: a single record larger than the whole budget must still be able to pass, or the
    relay would wait forever.

    Bytes come back only through acknowledgements. A target that failed acknowledges nothing
    more, so a waiter would wait forever: :meth:`interrupt` (the target's failure) wakes every
    waiter, and until :meth:`reset` (the relay dealt with the failure) ``acquire`` returns False
    instead of waiting: a failure that came before the wait began is not missed.
    """

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()
        self._on_change = on_change
        self._interrupted = False

    @property
    def used(self) -> int:
        """Bytes currently in flight."""
        return self._used

    def acquire(self, n: int, stop: threading.Event) -> bool:
        """Take ``n`` bytes, waiting for room; False, having taken nothing, if ``stop`` is set or the
        budget is interrupted while there is no room."""
        with self._cond:
            while self._used > 0 and self._used + n > self.limit:
                if stop.is_set() or self._interrupted:
                    return False
                self._cond.wait(0.2)
            self._used += n
            used = self._used
        if self._on_change is not None:
            self._on_change(used)
        return True

    def interrupt(self) -> None:
        """Wake every waiter without room, and refuse to wait until :meth:`reset` (from any thread)."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()

    def resume(self) -> None:
        """Wait again for room (an interrupt that came after its failure was dealt with)."""
        with self._cond:
            self._interrupted = False

    def release(self, n: int) -> None:
        """Give back ``n`` bytes (called when the target acknowledged them)."""
        with self._cond:
            self._used = max(0, self._used - n)
            used = self._used
            self._cond.notify_all()
        if self._on_change is not None:
            self._on_change(used)

    def reset(self) -> None:
        """Forget everything in flight (the target dropped it and the relay re-reads it); wait again."""
        with self._cond:
            self._used = 0
            self._interrupted = False
            self._cond.notify_all()
        if self._on_change is not None:
            self._on_change(0)
