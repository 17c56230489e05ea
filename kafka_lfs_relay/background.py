"""Periodic work beside the relay (group offset sync, topic config sync), on a thread of its own.

Admin calls to a cluster that is down take their full timeout; they run here so that the relay's
thread never waits for them. A task that fails is logged and tried again at its next turn; it
never stops the relay.

One instance of a relay does this work, whatever runs it (``--workers``, replicas of a
Deployment): the one that owns the *lead partition*, partition 0 of the first configured topic
(:func:`lead_partition`). Kafka's group gives that partition to exactly one member, so no
election is needed, and the duty moves with it when that member dies or the group rebalances.
Several instances doing it at once would commit a group's offsets from different views, one
possibly older than the other. A relay outside group mode owns every partition and so leads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from relay.message import SourcePartition

log = structlog.get_logger("kafka_lfs_relay.background")


@dataclass
class Task:
    """``run`` every ``interval`` seconds (the first time right after start); ``close`` when stopping."""

    name: str
    interval: float
    run: Callable[[], None]
    close: Callable[[], None] | None = None
    due: float = 0.0


def lead_partition(explicit: Sequence[str], selected: Iterable[str]) -> SourcePartition | None:
    """The partition whose owner does the periodic work: partition 0 of the first explicit topic, or,
    when patterns alone select the topics, of the first by name of those ``selected`` now (every
    instance selects the same ones); None while nothing is selected."""
    if explicit:
        return SourcePartition(explicit[0], 0)
    first = min(selected, default=None)
    return None if first is None else SourcePartition(first, 0)


class Periodic:
    """Runs tasks one after another on one daemon thread, each at its own interval, while ``leads()``.

    ``leads`` is asked before each turn (from this thread): while it is False the tasks wait, and
    the first turn after it becomes True runs every task at once.
    """

    def __init__(self, tasks: list[Task], leads: Callable[[], bool] = lambda: True) -> None:
        self.tasks = tasks
        self.leads = leads
        self._leading = False
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

    def _leading_now(self) -> bool:
        leading = self.leads()
        if leading != self._leading:
            log.info(
                "this instance owns the lead partition: it runs the periodic work"
                if leading
                else "this instance no longer owns the lead partition: the periodic work moves with it",
                tasks=[task.name for task in self.tasks],
            )
            self._leading = leading
            for task in self.tasks:
                task.due = 0.0
        return leading

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._leading_now():
                self._stop.wait(1.0)
                continue
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
            self._stop.wait(min(max(0.05, wait), 1.0))  # leadership is looked at again every second
