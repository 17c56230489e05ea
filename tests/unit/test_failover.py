"""Unit tests of relay.failover: when the relay leaves its active source, and for which one."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from relay.failover import Decision, Health, RelayView, Switchboard, decide, worst_lag
from relay.message import SourcePartition
from relay.settings import Backoff, SourcePoolConfig

P0 = SourcePartition("orders", 0)
P1 = SourcePartition("orders", 1)
ORDER = ["a", "b", "c"]


def pool(
    *, lag_threshold: int = 100, unhealthy_after: int = 2, lag_checks: int = 2, min_dwell: float = 30.0
) -> SourcePoolConfig:
    """A SourcePoolConfig with every field explicit, so the tests do not depend on defaults."""
    return SourcePoolConfig(
        healthcheck_interval=2.0,
        request_timeout=2.0,
        lag_threshold=lag_threshold,
        unhealthy_after=unhealthy_after,
        lag_checks=lag_checks,
        min_dwell=min_dwell,
        random_initial=False,
        verify_on_switch=True,
        backoff=Backoff(0.5, 30.0),
    )


def ok(source: str, at: float, **ends: int) -> Health:
    """A successful check of ``source`` at time ``at``; ``ends`` maps ``p0``/``p1`` to end offsets."""
    offsets = {SourcePartition("orders", int(name[1:])): end for name, end in ends.items()}
    return Health(source, True, at, offsets)


def failed(source: str, at: float) -> Health:
    """A failed check of ``source`` at time ``at``."""
    return Health(source, False, at, {}, "timed out")


# --- worst_lag ---------------------------------------------------------------------------------


def test_worst_lag_is_the_largest_single_partition_gap() -> None:
    """worst_lag reports the biggest per-partition gap and where it is, not a sum."""
    assert worst_lag({P0: 100, P1: 100}, {P0: 160, P1: 190}) == (90, "orders/1")


def test_worst_lag_is_zero_when_not_behind() -> None:
    """A source level with or ahead of the other trails it by 0, nowhere."""
    assert worst_lag({P0: 200, P1: 100}, {P0: 150, P1: 100}) == (0, "")


def test_worst_lag_counts_a_missing_partition_from_zero() -> None:
    """A partition the trailing source did not report counts as being at offset 0."""
    assert worst_lag({P0: 10}, {P0: 10, P1: 42}) == (42, "orders/1")


# --- dead active source ------------------------------------------------------------------------


def test_dead_active_switches_to_the_source_furthest_ahead_even_within_min_dwell() -> None:
    """After unhealthy_after failures the active is left at once for the healthy source furthest ahead."""
    history = {
        "a": [failed("a", 10.0), failed("a", 12.0)],
        "b": [ok("b", 10.0, p0=500, p1=500), ok("b", 12.0, p0=500, p1=500)],
        "c": [ok("c", 10.0, p0=900, p1=900), ok("c", 12.0, p0=900, p1=900)],
    }
    decision = decide("a", ORDER, history, pool(unhealthy_after=2, min_dwell=3600.0), now=12.0, active_since=11.0)
    assert (decision.to, decision.reason) == ("c", "unreachable")


def test_single_failure_is_not_enough_when_unhealthy_after_is_two() -> None:
    """One failed check of the active source does not make it dead when unhealthy_after is 2."""
    history = {
        "a": [ok("a", 10.0, p0=500), failed("a", 12.0)],
        "b": [ok("b", 10.0, p0=500), ok("b", 12.0, p0=500)],
    }
    decision = decide("a", ["a", "b"], history, pool(unhealthy_after=2, min_dwell=0.0), now=12.0, active_since=0.0)
    assert decision.to is None


def test_dead_active_without_healthy_alternative_stays_and_says_so() -> None:
    """With the active dead and no other source healthy, the decision is to stay: no_healthy_source."""
    history = {
        "a": [failed("a", 10.0), failed("a", 12.0)],
        "b": [ok("b", 10.0, p0=500), failed("b", 12.0)],
    }
    decision = decide("a", ["a", "b"], history, pool(unhealthy_after=2), now=12.0, active_since=0.0)
    assert (decision.to, decision.reason) == (None, "no_healthy_source")


def test_dead_active_tie_is_broken_by_config_order() -> None:
    """When two healthy sources are equally far ahead, the one listed first in the config wins."""
    history = {
        "a": [failed("a", 10.0), failed("a", 12.0)],
        "b": [ok("b", 12.0, p0=700)],
        "c": [ok("c", 12.0, p0=700)],
    }
    decision = decide("a", ["a", "c", "b"], history, pool(unhealthy_after=2), now=12.0, active_since=0.0)
    assert decision.to == "c"


# --- lagging active source ---------------------------------------------------------------------


def test_lag_on_one_partition_above_threshold_switches() -> None:
    """A gap above lag_threshold on a single partition, for lag_checks checks, makes the relay switch."""
    history = {
        "a": [ok("a", 10.0, p0=1000, p1=1000), ok("a", 12.0, p0=1000, p1=1000)],
        "b": [ok("b", 10.0, p0=1101, p1=1000), ok("b", 12.0, p0=1101, p1=1000)],
    }
    decision = decide("a", ["a", "b"], history, pool(lag_threshold=100, min_dwell=0.0), now=12.0, active_since=0.0)
    assert (decision.to, decision.reason) == ("b", "lagging")


def test_lag_is_not_summed_over_partitions() -> None:
    """Two partitions each below lag_threshold do not switch even when their gaps sum above it."""
    history = {
        "a": [ok("a", 10.0, p0=1000, p1=1000), ok("a", 12.0, p0=1000, p1=1000)],
        "b": [ok("b", 10.0, p0=1060, p1=1060), ok("b", 12.0, p0=1060, p1=1060)],
    }
    decision = decide("a", ["a", "b"], history, pool(lag_threshold=100, min_dwell=0.0), now=12.0, active_since=0.0)
    assert decision.to is None


def test_lag_must_persist_for_lag_checks_consecutive_checks() -> None:
    """A gap seen on fewer than lag_checks consecutive checks does not switch."""
    history = {
        "a": [ok("a", 10.0, p0=1000), ok("a", 12.0, p0=1000), ok("a", 14.0, p0=1000)],
        "b": [ok("b", 10.0, p0=1000), ok("b", 12.0, p0=1500), ok("b", 14.0, p0=1500)],
    }
    config = pool(lag_threshold=100, lag_checks=3, min_dwell=0.0)
    assert decide("a", ["a", "b"], history, config, now=14.0, active_since=0.0).to is None


def test_lag_persisting_for_lag_checks_checks_switches() -> None:
    """The same gap seen on lag_checks consecutive checks does switch."""
    history = {
        "a": [ok("a", 10.0, p0=1000), ok("a", 12.0, p0=1000), ok("a", 14.0, p0=1000)],
        "b": [ok("b", 10.0, p0=1500), ok("b", 12.0, p0=1500), ok("b", 14.0, p0=1500)],
    }
    config = pool(lag_threshold=100, lag_checks=3, min_dwell=0.0)
    assert decide("a", ["a", "b"], history, config, now=14.0, active_since=0.0).to == "b"


def test_lag_with_fewer_checks_than_lag_checks_does_not_switch() -> None:
    """With less history than lag_checks the active source is kept, however large the gap."""
    history = {"a": [ok("a", 10.0, p0=0)], "b": [ok("b", 10.0, p0=10**6)]}
    config = pool(lag_threshold=100, lag_checks=2, min_dwell=0.0)
    assert decide("a", ["a", "b"], history, config, now=10.0, active_since=0.0).to is None


def test_lag_within_min_dwell_does_not_switch() -> None:
    """A lagging source is kept until it has been active for min_dwell seconds."""
    history = {
        "a": [ok("a", 10.0, p0=1000), ok("a", 12.0, p0=1000)],
        "b": [ok("b", 10.0, p0=5000), ok("b", 12.0, p0=5000)],
    }
    config = pool(lag_threshold=100, min_dwell=30.0)
    assert decide("a", ["a", "b"], history, config, now=12.0, active_since=0.0).to is None


def test_lag_exactly_at_threshold_does_not_switch() -> None:
    """A gap equal to lag_threshold is not "more than" it and does not switch."""
    history = {
        "a": [ok("a", 10.0, p0=1000), ok("a", 12.0, p0=1000)],
        "b": [ok("b", 10.0, p0=1100), ok("b", 12.0, p0=1100)],
    }
    decision = decide("a", ["a", "b"], history, pool(lag_threshold=100, min_dwell=0.0), now=12.0, active_since=0.0)
    assert decision.to is None


def test_idle_topic_never_switches() -> None:
    """When every source reports the same end offsets (no new records), the relay never switches."""
    history: dict[str, list[Health]] = {"a": [], "b": [], "c": []}
    config = pool(lag_threshold=1, lag_checks=1, min_dwell=0.0)
    for i in range(20):
        for name in ORDER:
            history[name].append(ok(name, 2.0 * i, p0=42, p1=0))
        assert decide("a", ORDER, history, config, now=2.0 * i, active_since=0.0) == Decision(None, "ok")


def test_idle_topic_with_no_partitions_reported_never_switches() -> None:
    """Checks that report no end offsets at all never make the relay switch."""
    history = {"a": [ok("a", 10.0), ok("a", 12.0)], "b": [ok("b", 10.0), ok("b", 12.0)]}
    config = pool(lag_threshold=1, lag_checks=1, min_dwell=0.0)
    assert decide("a", ["a", "b"], history, config, now=12.0, active_since=0.0).to is None


def test_lagging_switch_goes_to_the_source_furthest_ahead() -> None:
    """When several healthy sources are ahead, the lagging active is left for the one furthest ahead."""
    history = {
        "a": [ok("a", 10.0, p0=1000), ok("a", 12.0, p0=1000)],
        "b": [ok("b", 10.0, p0=1500), ok("b", 12.0, p0=1500)],
        "c": [ok("c", 10.0, p0=2000), ok("c", 12.0, p0=2000)],
    }
    decision = decide("a", ORDER, history, pool(lag_threshold=100, min_dwell=0.0), now=12.0, active_since=0.0)
    assert decision.to == "c"


def test_failed_check_does_not_count_as_a_lagging_check() -> None:
    """A failed check measures no lag, so it cannot stand in for one of the lag_checks lagging checks."""
    history = {
        # One real lag observation (at 14.0), preceded by a failure: not yet lag_checks=2 lagging checks.
        "a": [ok("a", 10.0, p0=1000), failed("a", 12.0), ok("a", 14.0, p0=1000)],
        "b": [ok("b", 10.0, p0=1000), ok("b", 12.0, p0=1150), ok("b", 14.0, p0=1150)],
    }
    config = pool(lag_threshold=100, unhealthy_after=3, lag_checks=2, min_dwell=0.0)
    assert decide("a", ["a", "b"], history, config, now=14.0, active_since=0.0).to is None


# --- flapping ----------------------------------------------------------------------------------


def simulate(leader: Callable[[int], str], steps: int, config: SourcePoolConfig, interval: float = 2.0) -> list[float]:
    """Run ``steps`` health-check rounds of sources a and b where ``leader(i)`` is ahead; return switch times."""
    order = ["a", "b"]
    history: dict[str, list[Health]] = {"a": [], "b": []}
    active, since, switches = "a", 0.0, []
    for i in range(steps):
        now = interval * i
        for name in order:
            lead = config.lag_threshold + 50 if name == leader(i) else 0
            history[name].append(ok(name, now, p0=1000 * i + lead))
        decision = decide(active, order, history, config, now=now, active_since=since)
        if decision.to is not None:
            active, since = decision.to, now
            switches.append(now)
    return switches


def test_sources_alternating_every_check_never_switch() -> None:
    """Sources that take turns being ahead on every check never lag for lag_checks checks in a row."""
    config = pool(lag_threshold=100, lag_checks=2, min_dwell=0.0)
    assert simulate(lambda i: "ab"[i % 2], steps=200, config=config) == []


def test_sources_taking_turns_switch_at_most_once_per_min_dwell() -> None:
    """Sources that take turns being ahead for several checks cause switches at least min_dwell apart."""
    config = pool(lag_threshold=100, lag_checks=2, min_dwell=30.0)
    switches = simulate(lambda i: "ab"[(i // 5) % 2], steps=300, config=config)
    assert switches, "the scenario should make the relay switch at least once"
    assert all(later - earlier >= 30.0 for earlier, later in pairwise(switches))
    assert len(switches) <= 600.0 / 30.0


# --- behind the relay's position -------------------------------------------------------------


def view(waiting: tuple[SourcePartition, ...] = (), **positions: int) -> RelayView:
    """The relay's positions (``p0``/``p1`` to next offsets) and the partitions it waits on."""
    at = {SourcePartition("orders", int(name[1:])): pos for name, pos in positions.items()}
    return RelayView(at, frozenset(waiting))


def test_waiting_on_the_active_switches_at_once_to_a_source_holding_every_position() -> None:
    """The relay waits on p0 (the active ends below its position); a source holding every position is
    switched to at once, within min_dwell, for reason behind_position."""
    history = {
        "a": [ok("a", 10.0, p0=500, p1=900), ok("a", 12.0, p0=500, p1=900)],
        "b": [ok("b", 10.0, p0=800, p1=900), ok("b", 12.0, p0=800, p1=900)],
    }
    decision = decide(
        "a", ["a", "b"], history, pool(min_dwell=3600.0), now=12.0, active_since=11.0,
        view=view((P0,), p0=700, p1=900),
    )  # fmt: skip
    assert (decision.to, decision.reason) == ("b", "behind_position")
    assert "orders/0 (end 500, position 700)" in decision.detail


def test_waiting_with_no_source_holding_the_position_stays() -> None:
    """If no healthy source reaches the position the relay waits on, it stays (and keeps waiting)."""
    history = {"a": [ok("a", 12.0, p0=500)], "b": [ok("b", 12.0, p0=650)], "c": [failed("c", 12.0)]}
    decision = decide("a", ORDER, history, pool(min_dwell=0.0), now=12.0, active_since=0.0, view=view((P0,), p0=700))
    assert decision.to is None


def test_behind_position_needs_every_position_not_only_the_waited_one() -> None:
    """A source that holds the waited-on position but trails another position is not switched to:
    it would only move the wait to the other partition (and back again)."""
    history = {
        "a": [ok("a", 12.0, p0=500, p1=900)],
        "b": [ok("b", 12.0, p0=800, p1=600)],
    }
    config = pool(min_dwell=0.0, lag_threshold=10_000)
    decision = decide("a", ["a", "b"], history, config, now=12.0, active_since=0.0, view=view((P0,), p0=700, p1=900))
    assert decision.to is None


def test_behind_position_is_not_taken_once_the_active_has_caught_up() -> None:
    """If the active's newest check already reaches the waited-on position, the relay is about to go on: no switch."""
    history = {"a": [ok("a", 12.0, p0=700)], "b": [ok("b", 12.0, p0=900)]}
    decision = decide(
        "a", ["a", "b"], history, pool(min_dwell=0.0), now=12.0, active_since=0.0, view=view((P0,), p0=700)
    )
    assert decision.to is None


def test_behind_position_prefers_the_source_furthest_ahead_among_those_holding_the_positions() -> None:
    """Among sources holding every position, the one that trails the others least is chosen."""
    history = {"a": [ok("a", 12.0, p0=0)], "b": [ok("b", 12.0, p0=710)], "c": [ok("c", 12.0, p0=900)]}
    decision = decide("a", ORDER, history, pool(), now=12.0, active_since=11.9, view=view((P0,), p0=700))
    assert (decision.to, decision.reason) == ("c", "behind_position")


def test_positions_from_the_beginning_are_held_by_every_source() -> None:
    """A position of -1 (nothing relayed yet: read from the beginning) never disqualifies a source."""
    history = {"a": [ok("a", 12.0, p0=5)], "b": [ok("b", 12.0, p0=20)]}
    decision = decide("a", ["a", "b"], history, pool(), now=12.0, active_since=11.9, view=view((P0,), p0=10, p1=-1))
    assert decision.to == "b"


def test_unreachable_wins_over_behind_position() -> None:
    """A dead active is left for the best healthy source even if none holds the relay's positions."""
    history = {"a": [failed("a", 10.0), failed("a", 12.0)], "b": [ok("b", 12.0, p0=100)]}
    decision = decide("a", ["a", "b"], history, pool(), now=12.0, active_since=0.0, view=view((P0,), p0=700))
    assert (decision.to, decision.reason) == ("b", "unreachable")


def test_without_waiting_partitions_positions_change_nothing() -> None:
    """Positions alone (nothing waited on) never make the relay switch."""
    history = {"a": [ok("a", 12.0, p0=500)], "b": [ok("b", 12.0, p0=900)]}
    decision = decide("a", ["a", "b"], history, pool(), now=12.0, active_since=11.9, view=view((), p0=500))
    assert decision.to is None


# --- the switchboard: decisions taken by the relay's thread -----------------------------------


def board(config: SourcePoolConfig, order: tuple[str, ...] = ("a", "b", "c")) -> Switchboard:
    sb = Switchboard(list(order), config)
    sb.start_on(order[0], 0.0)
    return sb


def test_a_decision_computed_during_a_switch_is_not_handed_over_after_it() -> None:
    """a dies, the relay takes a->b; checks keep arriving while it switches; once on b nothing more is
    taken: no b->b switch from a decision made while a was still active."""
    sb = board(pool(unhealthy_after=2, min_dwell=30.0), ("a", "b"))
    for at in (10.0, 12.0):
        sb.record(failed("a", at))
        sb.record(ok("b", at, p0=500))
    decision = sb.take(12.0)
    assert decision is not None and (decision.to, decision.reason) == ("b", "unreachable")
    # The switch takes a while; the health thread records two more rounds meanwhile.
    for at in (14.0, 16.0):
        sb.record(failed("a", at))
        sb.record(ok("b", at, p0=500))
        assert sb.assess(at).to == "b"  # still "leave a": a is active until the relay says otherwise
    sb.switched("b", 17.0)
    assert sb.take(17.0) is None
    assert sb.active == "b"


def test_a_lag_switch_after_a_failover_waits_min_dwell_from_that_failover() -> None:
    """Right after a failover to b, c being far ahead of b does not switch before min_dwell on b."""
    sb = board(pool(unhealthy_after=1, lag_checks=1, lag_threshold=100, min_dwell=30.0))
    sb.record(failed("a", 10.0))
    sb.record(ok("b", 10.0, p0=500))
    sb.record(ok("c", 10.0, p0=500))
    decision = sb.take(10.0)
    assert decision is not None and decision.to == "b"
    sb.record(ok("c", 11.0, p0=5000))  # while switching, c runs ahead of b
    sb.record(ok("b", 11.0, p0=500))
    sb.switched("b", 12.0)
    assert sb.take(12.0) is None
    sb.record(ok("b", 30.0, p0=500))
    sb.record(ok("c", 30.0, p0=5000))
    assert sb.take(30.0) is None  # 18 s on b
    sb.record(ok("b", 43.0, p0=500))
    sb.record(ok("c", 43.0, p0=5000))
    decision = sb.take(43.0)
    assert decision is not None and (decision.to, decision.reason) == ("c", "lagging")


def test_take_decides_again_only_when_something_changed() -> None:
    """A decision not carried out is not handed over twice; a new check makes the board decide again."""
    sb = board(pool(unhealthy_after=1), ("a", "b"))
    sb.record(failed("a", 10.0))
    sb.record(ok("b", 10.0, p0=1))
    assert sb.take(10.0) is not None
    assert sb.take(10.1) is None
    sb.record(failed("a", 12.0))
    decision = sb.take(12.0)
    assert decision is not None and decision.to == "b"


def test_publishing_a_wait_makes_the_board_switch_at_once() -> None:
    """The relay's thread publishes that it waits on p0; the next take switches to the source holding it."""
    sb = board(pool(min_dwell=3600.0), ("a", "b"))
    sb.record(ok("a", 10.0, p0=500))
    sb.record(ok("b", 10.0, p0=900))
    assert sb.take(10.0) is None
    sb.publish(view((P0,), p0=700))
    decision = sb.take(10.5)
    assert decision is not None and (decision.to, decision.reason) == ("b", "behind_position")
    sb.switched("b", 11.0)
    assert sb.take(11.0) is None  # the wait was about a; on b nothing is waited on yet
