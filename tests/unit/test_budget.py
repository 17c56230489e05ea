"""Unit tests of relay.budget.ByteBudget: the in-flight byte budget shared by reader and target."""

from __future__ import annotations

import threading

from relay.budget import ByteBudget

# How long a test waits to conclude that a blocked acquire is still blocked, and for a wake-up.
SETTLE = 0.05
WAKE = 0.5


def acquire_in_thread(budget: ByteBudget, n: int, stop: threading.Event) -> tuple[threading.Event, list[bool]]:
    """Start ``budget.acquire(n, stop)`` in a daemon thread; return an event set when it returns, and its result."""
    done = threading.Event()
    result: list[bool] = []

    def run() -> None:
        result.append(budget.acquire(n, stop))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, result


def test_acquire_within_limit_does_not_block() -> None:
    """Acquiring up to the limit returns True at once and counts the bytes as in flight."""
    budget = ByteBudget(100)
    stop = threading.Event()
    assert budget.acquire(60, stop)
    assert budget.acquire(40, stop)
    assert budget.used == 100


def test_acquire_beyond_limit_blocks_until_release() -> None:
    """An acquire that would exceed the limit waits, and proceeds as soon as enough bytes are released."""
    budget = ByteBudget(100)
    stop = threading.Event()
    assert budget.acquire(80, stop)
    done, result = acquire_in_thread(budget, 30, stop)
    assert not done.wait(SETTLE)
    budget.release(80)
    assert done.wait(WAKE)
    assert result == [True]
    assert budget.used == 30


def test_oversize_acquire_passes_when_nothing_is_in_flight() -> None:
    """A single acquire larger than the whole budget passes when nothing else is in flight."""
    budget = ByteBudget(100)
    assert budget.acquire(1_000, threading.Event())
    assert budget.used == 1_000


def test_oversize_acquire_waits_while_something_is_in_flight() -> None:
    """An acquire larger than the budget waits until everything in flight is released, then passes."""
    budget = ByteBudget(100)
    stop = threading.Event()
    assert budget.acquire(1, stop)
    done, result = acquire_in_thread(budget, 1_000, stop)
    assert not done.wait(SETTLE)
    budget.release(1)
    assert done.wait(WAKE)
    assert result == [True]


def test_acquire_returns_false_when_stop_is_set_while_waiting() -> None:
    """A waiting acquire gives up and returns False once ``stop`` is set, without taking the bytes."""
    budget = ByteBudget(100)
    stop = threading.Event()
    assert budget.acquire(100, stop)
    done, result = acquire_in_thread(budget, 1, stop)
    assert not done.wait(SETTLE)
    stop.set()
    assert done.wait(WAKE)
    assert result == [False]
    assert budget.used == 100


def test_reset_wakes_waiters() -> None:
    """reset forgets everything in flight and lets a waiting acquire proceed."""
    budget = ByteBudget(100)
    stop = threading.Event()
    assert budget.acquire(100, stop)
    done, result = acquire_in_thread(budget, 50, stop)
    assert not done.wait(SETTLE)
    budget.reset()
    assert done.wait(WAKE)
    assert result == [True]
    assert budget.used == 50


def test_release_never_goes_below_zero() -> None:
    """Releasing more than is in flight leaves zero in flight, not a negative count."""
    budget = ByteBudget(100)
    assert budget.acquire(10, threading.Event())
    budget.release(25)
    assert budget.used == 0


def test_on_change_reports_used_bytes() -> None:
    """on_change is called with the bytes in flight after every acquire, release and reset."""
    seen: list[int] = []
    budget = ByteBudget(100, on_change=seen.append)
    stop = threading.Event()
    budget.acquire(30, stop)
    budget.acquire(20, stop)
    budget.release(30)
    budget.reset()
    assert seen == [30, 50, 20, 0]


def test_an_interrupt_wakes_a_waiter_and_refuses_to_wait_until_reset() -> None:
    """A target that fails acknowledges nothing more: its interrupt wakes the waiter, and a later wait, too."""
    budget = ByteBudget(100)
    stop = threading.Event()
    assert budget.acquire(80, stop)
    done, result = acquire_in_thread(budget, 30, stop)
    assert not done.wait(SETTLE)
    budget.interrupt()
    assert done.wait(WAKE)
    assert result == [False] and budget.used == 80
    assert not budget.acquire(30, stop)  # a failure that came before the wait began is not missed
    assert budget.acquire(10, stop)  # there is room: no wait, no refusal
    budget.reset()
    assert budget.used == 0 and budget.acquire(80, stop)
    done, result = acquire_in_thread(budget, 30, stop)
    assert not done.wait(SETTLE)
    budget.release(80)
    assert done.wait(WAKE) and result == [True]
