"""The failover decision, as a pure function of health-check history (no I/O, easy to test).

Rules (see the README's "Failover semantics"):

- The active source is *dead* after ``unhealthy_after`` consecutive failed checks. A dead source
  is left for the healthy source that is furthest ahead, at once, whatever the dwell time.
- The active source *lags* when, on any single partition, the best healthy source's end offset
  is more than ``lag_threshold`` records ahead of it (never a sum over partitions), for
  ``lag_checks`` consecutive checks. A lagging source is left only after ``min_dwell`` seconds on
  it, so two sources that take turns being ahead cannot make the relay flap.
- With no healthy alternative, the relay stays where it is and says so.
"""

from __future__ import annotations

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


def decide(
    active: str,
    order: Sequence[str],
    history: Mapping[str, Sequence[Health]],
    config: SourcePoolConfig,
    now: float,
    active_since: float,
) -> Decision:
    """Whether to leave ``active``; ``history`` holds each source's recent checks, newest last."""
    latest = {name: checks[-1] for name, checks in history.items() if checks}
    healthy = [latest[name] for name in order if name in latest and latest[name].ok and name != active]
    mine = list(history.get(active, ()))
    recent = mine[-config.unhealthy_after :]
    if len(recent) == config.unhealthy_after and not any(h.ok for h in recent):
        if not healthy:
            return Decision(None, "no_healthy_source", f"{active} is unreachable and no other source is healthy")
        best = _best(healthy)
        return Decision(best.source, "unreachable", f"{active}: {recent[-1].error or 'health check failed'}")
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
