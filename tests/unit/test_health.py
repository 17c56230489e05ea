"""/healthz and /readyz: the rules of relay.health, and the listener that serves them with /metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from relay.failover import Health
from relay.health import RelayHealth
from relay.metrics import RelayMetrics


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _health(stall: float = 60.0) -> tuple[RelayHealth, Clock, dict[str, Health | None]]:
    clock = Clock()
    health = RelayHealth(stall, clock)
    checks: dict[str, Health | None] = {"east": Health("east", True, clock.now)}
    health.watch_source(lambda: ("east", checks["east"]))
    return health, clock, checks


def test_starting_is_alive_but_not_ready() -> None:
    """While the target starts (reading positions back may take a while) the relay is alive, not ready."""
    health, clock, _ = _health()
    clock.now += 59
    assert health.liveness()[0]
    ready, body = health.readiness()
    assert not ready and body["status"] == "not_ready" and body["reasons"] == ["starting: the target has not started"]


def test_a_start_up_that_keeps_trying_is_alive_and_says_what_it_waits_for() -> None:
    """Each start-up attempt is progress: waiting an hour for a cluster with backoff is alive, and not ready."""
    health, clock, _ = _health()
    for _ in range(60):
        clock.now += 59
        health.starting("choosing a source, attempt 2: no source cluster is usable")
        assert health.liveness()[0]
    ready, body = health.readiness()
    assert not ready and body["reasons"] == [
        "starting: waiting for choosing a source, attempt 2: no source cluster is usable"
    ]


def test_a_start_up_call_that_does_not_return_is_stalled() -> None:
    """A start-up step that has not returned for longer than stall_timeout fails liveness, so it is restarted."""
    health, clock, _ = _health(stall=60)
    health.starting(None)
    clock.now += 61
    alive, body = health.liveness()
    assert not alive and body["status"] == "stalled" and body["phase"] == "starting"
    assert "start-up has made no progress for 61 s (stall_timeout 60 s)" in body["reason"]


def test_running_with_a_healthy_source_is_alive_and_ready() -> None:
    """Running, polled recently, the active source healthy: 200 on both, and the bodies say why."""
    health, clock, _ = _health()
    health.running()
    clock.now += 0.5
    health.polled()
    alive, live = health.liveness()
    ready, body = health.readiness()
    assert alive and live["status"] == "alive" and live["last_poll_seconds_ago"] == 0.0
    assert ready and body == {
        "status": "ready",
        "phase": "running",
        "source": {"name": "east", "healthy": True, "checked_seconds_ago": 0.5},
        "catching_up": False,
    }


def test_a_loop_that_neither_polls_nor_gets_acks_is_stalled() -> None:
    """No poll and no acknowledgement for longer than stall_timeout: /healthz fails, naming how long."""
    health, clock, _ = _health(stall=60)
    health.running()
    health.polled()
    clock.now += 59
    assert health.liveness()[0]
    clock.now += 2
    alive, body = health.liveness()
    assert not alive and body["status"] == "stalled" and "for 61 s (stall_timeout 60 s)" in body["reason"]


def test_acknowledgements_keep_a_loop_that_waits_for_budget_alive() -> None:
    """A loop blocked on the byte budget while the target keeps committing is not stalled."""
    health, clock, _ = _health(stall=60)
    health.running()
    health.polled()
    for _ in range(5):
        clock.now += 30
        health.acked()
        assert health.liveness()[0]


def test_a_drain_has_its_own_clock_and_a_stopped_relay_is_alive() -> None:
    """Draining starts the stall clock again (acks must follow); a stopped relay is on its way out, alive."""
    health, clock, _ = _health(stall=60)
    health.running()
    health.polled()
    clock.now += 50
    health.draining()
    clock.now += 50
    assert health.liveness()[0]
    assert health.readiness()[1]["reasons"] == ["draining: the relay is stopping"]
    clock.now += 20
    assert not health.liveness()[0]
    health.stopped()
    assert health.liveness()[0]


def test_an_unhealthy_active_source_is_not_ready_unless_catching_up() -> None:
    """The active source failed its last check: not ready, with its error; catching up is ready."""
    health, clock, checks = _health()
    health.running()
    checks["east"] = Health("east", False, clock.now, error="Failed to get metadata: Local: Broker transport failure")
    ready, body = health.readiness()
    assert not ready
    assert body["source"]["healthy"] is False and body["source"]["error"].startswith("Failed to get metadata")
    assert body["reasons"] == [
        "source east failed its last health check: Failed to get metadata: Local: Broker transport failure"
    ]
    health.catching_up("waiting for west to reach offset 120 on t/0")
    ready, body = health.readiness()
    assert ready and body["catching_up"] and body["catching_up_detail"].startswith("waiting for west")
    health.catching_up(None)
    assert not health.readiness()[0]


def test_group_mode_is_ready_once_joined_even_owning_nothing() -> None:
    """In group mode readiness waits for the first assignment; zero partitions then is a ready standby."""
    health, _, _ = _health()
    health.in_group("orders")
    health.running()
    ready, body = health.readiness()
    assert not ready and body["group"] == {"id": "orders", "joined": False, "partitions_owned": 0}
    assert body["reasons"] == ["joining consumer group orders: no partition assignment yet"]
    health.owns(0)
    ready, body = health.readiness()
    assert ready and body["group"] == {"id": "orders", "joined": True, "partitions_owned": 0}
    health.owns(3)
    assert health.readiness()[1]["group"]["partitions_owned"] == 3


def _get(url: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_one_listener_serves_metrics_liveness_and_readiness() -> None:
    """/metrics is Prometheus text; /healthz and /readyz are JSON with 200 or 503."""
    clock = Clock()
    metrics = RelayMetrics(health=RelayHealth(60, clock))
    port = metrics.serve("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"

    status, kind, text = _get(f"{base}/metrics")
    assert status == 200 and kind.startswith("text/plain") and "kafka_lfs_relay_records_relayed" in text

    status, kind, text = _get(f"{base}/healthz")
    assert (status, kind, json.loads(text)["status"]) == (200, "application/json", "alive")
    status, kind, text = _get(f"{base}/readyz")
    assert (status, json.loads(text)["status"]) == (503, "not_ready")

    metrics.health.running()
    clock.now += 120
    status, _, text = _get(f"{base}/healthz")
    assert (status, json.loads(text)["status"]) == (503, "stalled")
