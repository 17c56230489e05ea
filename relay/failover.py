"""The failover decision, as a pure function of health-check history (no I/O, easy to test).

Rules (see the README's "Failover semantics"):

- The active source is *dead* after ``unhealthy_after`` consecutive failed checks. A dead source
  is left for the healthy source that is furthest ahead, at once, whatever the dwell time.
- The active source *lags* when, on any single partition, the best healthy source's end offset
  is more than ``lag_threshold`` records ahead of it (never a sum over partitions), for
  ``lag_checks`` consecutive checks. A lagging source is left only after ``min_dwell`` seconds on
  it, so two sources that take turns being ahead cannot make the relay flap.
- The active source is *behind the relay's position* when the relay waits on a partition because
  the active source's end offset has not reached the relay's next offset there (a standby that
  trails, a source that lost records). A healthy source whose end offsets reach every position
  the relay holds is switched to at once, whatever the dwell time; the relay never re-reads or
  skips to get going again.
- With no healthy alternative, the relay stays where it is and says so.

:class:`Switchboard` holds the state both threads share: the health-check thread records checks,
the relay's thread publishes its positions and takes decisions. A decision is computed when the
relay's thread takes it, from the source active at that moment, never handed over from earlier.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from relay.message import SourcePartition
from relay.settings import SourcePoolConfig


@dataclass(frozen=True)
class Health:
    """One health check of one source cluster."""

    source: str
    ok: bool
    checked_at: float
    end_offsets: Mapping[SourcePartition, int] = field(default_factory=dict)
    error: str | None = None
    passing: bool = False
    """A failed check whose cause may pass by itself (no answer, a retriable error), unlike a missing
    topic or refused credentials."""


@dataclass(frozen=True)
class RelayView:
    """What the relay's thread tells the failover decision: its next offset per partition (-1: from
    the beginning), and the partitions it waits on because the active source has not reached them."""

    positions: Mapping[SourcePartition, int] = field(default_factory=dict)
    waiting: frozenset[SourcePartition] = frozenset()


@dataclass(frozen=True)
class Decision:
    """Switch to ``to`` (or stay, when None) and why."""

    to: str | None
    reason: str
    detail: str = ""


def worst_lag(behind: Mapping[SourcePartition, int], ahead: Mapping[SourcePartition, int]) -> tuple[int, str]:
    """The largest per-partition gap by which ``behind`` trails ``ahead``, and where it is."""
    worst, where = 0, ""
    for sp, end in ahead.items():
        gap = end - behind.get(sp, 0)
        if gap > worst:
            worst, where = gap, f"{sp.topic}/{sp.partition}"
    return worst, where


def _best(candidates: Sequence[Health]) -> Health:
    """The healthy source that trails the others least on its worst partition (config order breaks ties)."""
    best = candidates[0]
    best_score = max((worst_lag(best.end_offsets, other.end_offsets)[0] for other in candidates), default=0)
    for cand in candidates[1:]:
        score = max((worst_lag(cand.end_offsets, other.end_offsets)[0] for other in candidates), default=0)
        if score < best_score:
            best, best_score = cand, score
    return best


def _short(health: Health | None, positions: Mapping[SourcePartition, int]) -> tuple[SourcePartition, int, int] | None:
    """The first partition where ``health`` has not reached the relay's position: (partition, end, position)."""
    for sp, pos in sorted(positions.items()):
        end = health.end_offsets.get(sp, -1) if health is not None and health.ok else -1
        if pos >= 0 and end < pos:
            return sp, end, pos
    return None


def _behind_position(
    active: str, latest: Mapping[str, Health], healthy: Sequence[Health], view: RelayView
) -> Decision | None:
    """Leave ``active`` for a healthy source that holds every position, while the relay waits on ``active``."""
    waiting = {sp: view.positions.get(sp, -1) for sp in view.waiting}
    short = _short(latest.get(active), waiting)
    if short is None:
        return None  # nothing waited on, or the active source has just caught up
    covering = [h for h in healthy if _short(h, view.positions) is None]
    if not covering:
        return None
    best = _best(covering)
    sp, end, pos = short
    return Decision(
        best.source,
        "behind_position",
        f"{active} has not reached the relay's position on {sp.topic}/{sp.partition} (end {end}, position {pos}); "
        f"{best.source} holds every position",
    )


def decide(
    active: str,
    order: Sequence[str],
    history: Mapping[str, Sequence[Health]],
    config: SourcePoolConfig,
    now: float,
    active_since: float,
    view: RelayView | None = None,
) -> Decision:
    """Whether to leave ``active``; ``history`` holds each source's recent checks, newest last.

    ``view`` is the relay's positions and the partitions it waits on (none when not given).
    """
    latest = {name: checks[-1] for name, checks in history.items() if checks}
    healthy = [latest[name] for name in order if name in latest and latest[name].ok and name != active]
    mine = list(history.get(active, ()))
    recent = mine[-config.unhealthy_after :]
    if len(recent) == config.unhealthy_after and not any(h.ok for h in recent):
        if not healthy:
            return Decision(None, "no_healthy_source", f"{active} is unreachable and no other source is healthy")
        best = _best(healthy)
        return Decision(best.source, "unreachable", f"{active}: {recent[-1].error or 'health check failed'}")
    if view is not None and view.waiting:
        behind = _behind_position(active, latest, healthy, view)
        if behind is not None:
            return behind
    if not healthy or not mine or not mine[-1].ok or now - active_since < config.min_dwell:
        return Decision(None, "ok")
    lagging = mine[-config.lag_checks :]
    # A failed check has no end offsets; it must not read as "behind by everything".
    if len(lagging) < config.lag_checks or not all(h.ok for h in lagging):
        return Decision(None, "ok")
    best = _best(healthy)
    gaps = []
    for check in lagging:
        ahead = next(
            (h for h in history.get(best.source, ())[::-1] if h.ok and h.checked_at <= check.checked_at + 1e-9), best
        )
        gaps.append(worst_lag(check.end_offsets, ahead.end_offsets))
    if all(gap > config.lag_threshold for gap, _ in gaps):
        gap, where = gaps[-1]
        return Decision(
            best.source,
            "lagging",
            f"{active} trails {best.source} by {gap} records on {where} (lag_threshold {config.lag_threshold})",
        )
    return Decision(None, "ok")


class Switchboard:
    """The failover state the health-check thread and the relay's thread share, behind one lock (no I/O).

    The health-check thread records checks; the relay's thread publishes its positions, takes
    decisions and reports switches. :meth:`take` decides from the source active when it is
    called, so a decision can never be stale: no switch from B to B because a second decision was
    computed while the first switch was under way, and no lag switch that ignores ``min_dwell``
    counted from the switch just made.
    """

    def __init__(self, order: Sequence[str], config: SourcePoolConfig, history: int = 8) -> None:
        self.order = list(order)
        self.config = config
        self._history: dict[str, deque[Health]] = {name: deque(maxlen=history) for name in order}
        self._lock = threading.Lock()
        self._view = RelayView()
        self._active = self.order[0]
        self._active_since = 0.0
        self._changed = True

    @property
    def active(self) -> str:
        """The source the relay reads from."""
        with self._lock:
            return self._active

    @property
    def active_since(self) -> float:
        """When the relay started reading from the active source (monotonic seconds)."""
        with self._lock:
            return self._active_since

    def start_on(self, name: str, now: float) -> None:
        """The relay starts reading from ``name``."""
        with self._lock:
            self._active, self._active_since, self._changed = name, now, True

    def record(self, health: Health) -> Health | None:
        """Add a check to its source's history; returns the check before it."""
        with self._lock:
            checks = self._history[health.source]
            previous = checks[-1] if checks else None
            checks.append(health)
            self._changed = True
        return previous

    def latest(self, name: str) -> Health | None:
        """The newest check of source ``name``."""
        with self._lock:
            checks = self._history[name]
            return checks[-1] if checks else None

    def publish(self, view: RelayView) -> None:
        """The relay's thread: its positions now, and what it waits on."""
        with self._lock:
            if view != self._view:
                self._view, self._changed = view, True

    def assess(self, now: float) -> Decision:
        """The decision as things stand, without handing anything over (for logging and backoff)."""
        with self._lock:
            return self._decide(now)

    def take(self, now: float) -> Decision | None:
        """A switch to carry out now, decided from the active source and history at this moment.

        Decides again only when a check, the relay's view or the active source changed since the
        last call, so the relay's thread may call it between every two polls.
        """
        with self._lock:
            if not self._changed:
                return None
            self._changed = False
            decision = self._decide(now)
            return decision if decision.to is not None and decision.to != self._active else None

    def switched(self, to: str, now: float) -> str:
        """The relay now reads from ``to``; returns the source it left."""
        with self._lock:
            previous = self._active
            self._active, self._active_since, self._changed = to, now, True
            # Positions published for the previous source say nothing about this one.
            self._view = RelayView(self._view.positions)
        return previous

    def _decide(self, now: float) -> Decision:
        history = {name: list(checks) for name, checks in self._history.items()}
        return decide(self._active, self.order, history, self.config, now, self._active_since, self._view)
