"""Periodic work beside the relay (group offset sync, topic config sync), on a thread of its own.

Admin calls to a cluster that is down take their full timeout; they run here so that the relay's
thread never waits for them. A task that fails is logged and tried again at its next turn; it
never stops the relay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("kafka_lfs_relay.background")


@dataclass
class Task:
    """``run`` every ``interval`` seconds (the first time right after start); ``close`` when stopping."""

    name: str
    interval: float
    run: Callable[[], None]
    close: Callable[[], None] | None = None
    due: float = 0.0


class Periodic:
    """Runs tasks one after another on one daemon thread, each at its own interval."""

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (nothing happens without tasks)."""
        if not self.tasks:
            return
        self._thread = threading.Thread(target=self._loop, name="kafka-lfs-relay-background", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the task running now (waits at most ``timeout``), then close every task."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            for task in self.tasks:
                if task.close is not None:
                    task.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for task in self.tasks:
                if self._stop.is_set() or task.due > now:
                    continue
                try:
                    task.run()
                except Exception as exc:  # a background task never stops the relay; it is retried next time
                    log.warning("background task failed; trying again next time", task=task.name, error=str(exc))
                task.due = time.monotonic() + task.interval
            wait = min(task.due for task in self.tasks) - time.monotonic()
            self._stop.wait(max(0.05, wait))
