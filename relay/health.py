"""Liveness and readiness of one relay: what ``GET /healthz`` and ``GET /readyz`` answer.

The relay's loop, the target's acknowledgements and (in group mode) the ownership update a
:class:`RelayHealth` with cheap calls (a clock read and an attribute store); the HTTP handler
next to the metrics (:mod:`relay.metrics`) reads it on another thread. Every input is one
attribute written by one thread, so no lock is needed: a reader sees each value whole.

Liveness (``/healthz``): is this process still doing its work? Once running, the relay must
have *polled its source* (its loop comes round at least every 0.2 s, with or without records)
or *had records acknowledged by the target* within ``stall_timeout``. A loop that waits for
room in the byte budget while the target keeps committing is alive; a loop stuck in a call that
never returns, or waiting on a target that acknowledges nothing any more, is stalled, and a
restart is the remedy (it resumes exactly where the target says). A clean stop counts as alive.
Starting up (choosing a source, reading positions back, starting the target) is alive while it
makes progress: each attempt of a start-up step that begins, or each step that ends, counts
(:mod:`relay.startup`), so a relay that waits for a cluster with backoff stays alive, while one
call that has not returned for ``stall_timeout`` is stalled and gets restarted.

Readiness (``/readyz``): is this instance doing what it is there for? The target has started,
and the active source passed its last health check, or the relay is *catching up* (an input its
loop sets, see :meth:`RelayHealth.catching_up`). In group mode the instance must also have
joined its group (received its first assignment); how many partitions it owns is reported but
does not decide: an instance that owns none is a ready standby (see the README, "Deploying").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from relay.failover import Health

STALL_TIMEOUT = 120.0
"""Seconds without a poll and without an acknowledgement after which ``/healthz`` fails (default)."""

SourceCheck = Callable[[], "tuple[str, Health | None]"]
"""Returns the active source's name and its newest health check (None before the first)."""


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


class RelayHealth:
    """The state behind ``/healthz`` and ``/readyz``; see the module docstring for the rules."""

    def __init__(self, stall_timeout: float = STALL_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_timeout = stall_timeout
        self._clock = clock
        self._phase = "starting"
        self._phase_since = clock()
        self._started: float | None = None
        self._waiting: str | None = None
        self._polled: float | None = None
        self._acked: float | None = None
        self._catching_up: str | None = None
        self._source: SourceCheck | None = None
        self._group: str | None = None
        self._joined = False
        self._owned = 0

    # -- inputs ----------------------------------------------------------------------------------
    def watch_source(self, check: SourceCheck) -> None:
        """Where readiness reads the active source's health from (called on the HTTP thread)."""
        self._source = check

    def in_group(self, group_id: str) -> None:
        """This relay is a member of consumer group ``group_id`` (group mode)."""
        self._group = group_id

    def starting(self, waiting: str | None) -> None:
        """Start-up made progress (an attempt begins, a step ends); ``waiting`` says what it waits for, if anything."""
        self._started = self._clock()
        self._waiting = waiting

    def running(self) -> None:
        """The target has started and the loop begins."""
        self._set_phase("running")

    def draining(self) -> None:
        """The loop has ended; what is in flight is being acknowledged."""
        self._set_phase("draining")

    def stopped(self) -> None:
        """The relay has stopped (cleanly or not)."""
        self._set_phase("stopped")

    def polled(self) -> None:
        """The loop polled its source (records or not)."""
        self._polled = self._clock()

    def acked(self) -> None:
        """The target acknowledged records (called on the target's thread)."""
        self._acked = self._clock()

    def catching_up(self, detail: str | None) -> None:
        """The loop is catching up (``detail`` says with what), or no longer (None); ready either way."""
        self._catching_up = detail

    def owns(self, partitions: int) -> None:
        """Group mode: an assignment (even an empty one) or a loss; the instance has joined its group."""
        self._owned = partitions
        self._joined = True

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._phase_since = self._clock()

    # -- answers ---------------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(alive, the JSON body of ``/healthz``)."""
        now = self._clock()
        phase = self._phase
        body: dict[str, Any] = {
            "status": "alive",
            "phase": phase,
            "last_poll_seconds_ago": _ago(now, self._polled),
            "last_ack_seconds_ago": _ago(now, self._acked),
            "stall_timeout_seconds": self.stall_timeout,
        }
        if phase == "starting":
            idle = now - max(t for t in (self._started, self._phase_since) if t is not None)
            if idle <= self.stall_timeout:
                return True, body
            body["status"] = "stalled"
            body["reason"] = (
                f"start-up has made no progress for {idle:.0f} s (stall_timeout {self.stall_timeout:g} s): "
                "a call that does not return"
            )
            return False, body
        if phase not in ("running", "draining"):
            return True, body
        # The phase change counts as progress: a drain starts its own clock, and so does the loop.
        last = max(t for t in (self._polled, self._acked, self._phase_since) if t is not None)
        idle = now - last
        if idle <= self.stall_timeout:
            return True, body
        body["status"] = "stalled"
        body["reason"] = (
            f"the relay has neither polled its source nor had records acknowledged by the target for "
            f"{idle:.0f} s (stall_timeout {self.stall_timeout:g} s)"
        )
        return False, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the JSON body of ``/readyz``)."""
        now = self._clock()
        phase = self._phase
        body: dict[str, Any] = {"status": "ready", "phase": phase}
        reasons: list[str] = []
        if phase == "starting":
            if self._waiting is not None:
                body["waiting"] = self._waiting
            waiting = self._waiting
            reasons.append(f"starting: waiting for {waiting}" if waiting else "starting: the target has not started")
        elif phase != "running":
            reasons.append(f"{phase}: the relay is stopping")
        name, check = self._source() if self._source is not None else (None, None)
        if name is not None:
            body["source"] = {
                "name": name,
                "healthy": None if check is None else check.ok,
                "checked_seconds_ago": None if check is None else _ago(now, check.checked_at),
                **({"error": check.error} if check is not None and not check.ok else {}),
            }
        body["catching_up"] = self._catching_up is not None
        if self._catching_up is not None:
            body["catching_up_detail"] = self._catching_up
        if phase == "running" and name is not None and self._catching_up is None:
            if check is None:
                reasons.append(f"source {name} has not been checked yet")
            elif not check.ok:
                reasons.append(f"source {name} failed its last health check: {check.error or 'no reason given'}")
        if self._group is not None:
            body["group"] = {"id": self._group, "joined": self._joined, "partitions_owned": self._owned}
            if phase == "running" and not self._joined:
                reasons.append(f"joining consumer group {self._group}: no partition assignment yet")
        if reasons:
            body["status"] = "not_ready"
            body["reasons"] = reasons
        return not reasons, body
